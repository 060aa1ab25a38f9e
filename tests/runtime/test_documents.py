"""Stored documents: typed models in the code, BSON-ready dictionaries for MongoDB, and back."""

from __future__ import annotations

from datetime import UTC, date, datetime

import bson
from pydantic import Field

from contracts.models import TlsMode
from mailwarden_runtime.documents import Stored

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
