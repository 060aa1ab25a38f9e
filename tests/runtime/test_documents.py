"""Stored documents: typed models in the code, BSON-ready dictionaries for MongoDB, and back."""

from __future__ import annotations

from datetime import UTC, date, datetime

import bson
import pytest
from pydantic import BaseModel, Field, ValidationError

from contracts.models import TlsMode
from mailwarden_runtime.documents import Stored, changes, fields, patched, under

AT = datetime(2026, 12, 3, 9, 30, tzinfo=UTC)


class Thing(Stored):
    tls: TlsMode
    since: date
    at: datetime
    gone_at: datetime | None = None
    tags: list[str] = Field(default_factory=list)


def test_times_stay_dates_for_queries_and_the_rest_is_plain_json() -> None:
    thing = Thing(id="t1", tls=TlsMode.STARTTLS, since=date(2026, 1, 2), at=AT)
    stored = thing.stored()
    assert stored == {
        "_id": "t1",
        "tls": "starttls",
        "since": "2026-01-02",
        "at": AT,
        "gone_at": None,
        "tags": [],
    }
    assert type(stored["tls"]) is str
    assert Thing.model_validate(bson.decode(bson.encode(stored), bson.CodecOptions(tz_aware=True))) == thing


def test_include_writes_only_the_named_fields() -> None:
    thing = Thing.model_validate({"_id": "t1", "tls": "none", "since": "2026-01-02", "at": AT, "outbox": [1]})
    assert thing.stored(include={"at", "tags"}) == {"at": AT, "tags": []}


def test_fields_are_checked_and_written_as_the_whole_document_writes_them() -> None:
    values = fields(Thing, tls="starttls", at=AT, gone_at=None)
    assert values == {"tls": "starttls", "at": AT, "gone_at": None}
    assert values == Thing(id="t1", tls=TlsMode.STARTTLS, since=date(2026, 1, 2), at=AT).stored(
        include={"tls", "at", "gone_at"}
    )
    assert fields(Thing, id="t2") == {"_id": "t2"}
    assert under("part", fields(Inner, a=3)) == {"part.a": 3}


def test_fields_of_one_call_never_reach_the_next() -> None:
    assert fields(Thing, tls="none", tags=["a"]) == {"tls": "none", "tags": ["a"]}
    assert fields(Thing, at=AT) == {"at": AT}
    assert fields(Thing, tags=[]) == {"tags": []}


def test_fields_refuse_an_unknown_name_or_a_wrong_value() -> None:
    with pytest.raises(ValidationError, match="nope"):
        fields(Thing, nope=1)
    with pytest.raises(ValidationError, match="tls"):
        fields(Thing, tls="sometimes")


class Inner(BaseModel):
    a: int = 1
    b: int = 2


class Outer(BaseModel):
    name: str = "x"
    inner: Inner = Inner()


class OuterPatch(BaseModel):
    name: str | None = None
    inner: InnerPatch | None = None


class InnerPatch(BaseModel):
    a: int | None = None
    b: int | None = None


def test_patched_takes_only_what_the_patch_sets_and_not_null() -> None:
    base = Outer(name="kept", inner=Inner(a=5, b=6))
    patch = OuterPatch.model_validate({"name": None, "inner": {"b": 9}})
    assert patched(base, patch) == Outer(name="kept", inner=Inner(a=5, b=9))
    assert patched(base, OuterPatch()) == base


class Mapped(Stored):
    at: datetime
    tls: TlsMode = TlsMode.NONE
    logins: dict[str, Inner | None] = Field(default_factory=dict)


def test_changes_name_what_differs_and_set_a_map_key_by_key() -> None:
    before = Mapped(id="m1", at=AT, logins={"in": Inner(a=1), "out": Inner(a=2)})
    later = datetime(2026, 12, 4, 5, 0, tzinfo=UTC)
    after = before.model_copy(
        update={"at": later, "tls": TlsMode.STARTTLS, "logins": {"in": Inner(a=1), "out": None}}
    )
    change = changes(before, after)
    assert change.names == ("at", "tls")
    assert change.keys == {"logins": ("out",)}
    assert "tls" in change and "logins" in change and "id" not in change
    # a time stays a date (queries compare it), the rest as JSON; the unchanged login is not written
    assert change.stored() == {"at": later, "tls": "starttls", "logins.out": None}
    assert not changes(before, before.model_copy())
    assert changes(before, before.model_copy(update={"id": "m2"})).stored() == {"_id": "m2"}
