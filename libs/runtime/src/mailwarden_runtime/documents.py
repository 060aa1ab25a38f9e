"""Stored documents as pydantic models (typed in the code, plain BSON in MongoDB), and PATCH on models."""

from __future__ import annotations

import functools
import types
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field

from mailwarden_runtime.mongo import Document

M = TypeVar("M", bound=BaseModel)


class Stored(BaseModel):
    """A MongoDB document: ``_id`` as ``id``; fields the runtime adds (the outbox) are ignored."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    id: str = Field(alias="_id")

    def stored(self, include: Collection[str] | None = None) -> Document:
        """As MongoDB keeps it (only the ``include`` fields): see :func:`as_stored`."""
        return as_stored(self, include)


def as_stored(model: BaseModel, include: Collection[str] | None = None) -> Document:
    """``model`` as MongoDB keeps it (only the ``include`` fields): enums, dates and URLs as
    strings, its own times as BSON dates (so they sort and compare in queries)."""
    names = None if include is None else set(include)
    times = _times(type(model))
    out = model.model_dump(mode="json", by_alias=True, include=names, exclude=set(times))
    return out | {k: getattr(model, k) for k in times if names is None or k in names}


def fields(model: type[BaseModel], /, **values: object) -> Document:
    """Some fields of ``model`` as a ``$set`` writes them: each value is checked as that field
    (an unknown name or a wrong value raises ``ValidationError``) and written as :func:`as_stored`
    writes it, so a partial update keeps the stored form of a whole document."""
    part = _blank(model).model_copy()
    for name, value in values.items():
        model.__pydantic_validator__.validate_assignment(part, name, value)
    return as_stored(part, include=values)


@functools.cache
def _blank(model: type[M]) -> M:
    """An instance without its required fields, to validate some fields on (built once: costly
    for a model with many defaults)."""
    return model.model_construct()


@dataclass(frozen=True, slots=True)
class Changes(Generic[M]):
    """Where ``after`` differs from the version it was made from (:func:`changes`): the fields by
    name, and a map field (e.g. the logins per direction) by key, in the model's field order."""

    after: M
    names: tuple[str, ...]
    """Fields written whole."""
    keys: Mapping[str, tuple[str, ...]]
    """Map fields written key by key: a concurrent write of another key of the map is kept."""

    def __bool__(self) -> bool:
        return bool(self.names or self.keys)

    def __contains__(self, name: object) -> bool:
        return name in self.names or name in self.keys

    def stored(self) -> Document:
        """The ``$set`` that makes the change, written as :func:`as_stored` writes it."""
        include = (*self.names, *self.keys)
        stored = as_stored(self.after, include) if include else {}
        out: Document = {}
        for name in type(self.after).model_fields:
            key = _key(self.after, name)
            if name in self.keys:
                out.update({f"{key}.{k}": stored[key][k] for k in self.keys[name]})
            elif name in self.names:
                out[key] = stored[key]
        return out


def changes(before: M, after: M) -> Changes[M]:
    """What turns ``before`` into ``after``; a field that is a map in both is compared key by key."""
    names: list[str] = []
    keys: dict[str, tuple[str, ...]] = {}
    for name in type(after).model_fields:
        old, new = getattr(before, name), getattr(after, name)
        if old == new:
            continue
        if isinstance(new, dict) and isinstance(old, dict):
            keys[name] = tuple(k for k in new if old.get(k) != new[k])
        else:
            names.append(name)
    return Changes(after, tuple(names), keys)


def _key(model: BaseModel, name: str) -> str:
    """The stored name of a field (its alias: ``_id`` for ``id``)."""
    return type(model).model_fields[name].alias or name


def under(path: str, values: Document) -> Document:
    """``values`` (e.g. :func:`fields` of a part) set inside the part at ``path``: ``path.name``."""
    return {f"{path}.{name}": value for name, value in values.items()}


@functools.cache
def _times(cls: type[BaseModel]) -> frozenset[str]:
    return frozenset(name for name, f in cls.model_fields.items() if _is_time(f.annotation))


def _is_time(annotation: object) -> bool:
    if annotation is datetime:
        return True
    if get_origin(annotation) in (Union, types.UnionType):
        return any(_is_time(a) for a in get_args(annotation))
    return False


def patched(model: M, patch: BaseModel) -> M:
    """``model`` with the fields ``patch`` sets and does not set to ``null``; nested models alike."""
    update: dict[str, Any] = {}
    for name in patch.model_fields_set & set(type(model).model_fields):
        value, current = getattr(patch, name), getattr(model, name)
        if value is None:
            continue
        if isinstance(value, BaseModel) and isinstance(current, BaseModel):
            value = patched(current, value)
        update[name] = value
    return model.model_copy(update=update)
