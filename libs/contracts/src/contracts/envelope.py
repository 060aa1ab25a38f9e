"""The envelope every event travels in: identity, type, version, time, correlation, producer.

The envelope id doubles as the ``Nats-Msg-Id`` header, so JetStream drops re-publishes of one event.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from contracts.events import EVENT_TYPES, Event, FieldError

E = TypeVar("E", bound=Event)


class Envelope(BaseModel, Generic[E]):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: uuid.UUID
    type: str
    schema_version: Annotated[int, Field(ge=1)]
    occurred_at: AwareDatetime
    correlation_id: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    producer: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    actor: Annotated[str, StringConstraints(min_length=1, max_length=300)] | None = Field(
        None,
        description="Who caused the event: `token:<subject>` / `jwt:<subject>`; none for automatic ones.",
    )
    data: E

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()


class EnvelopeError(ValueError):
    """A message that is not a valid event; ``errors`` names each bad field."""

    def __init__(self, reason: str, errors: list[FieldError]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.errors = errors


_MODELS: dict[type[Event], type[Envelope[Any]]] = {}


def envelope_model(event_cls: type[E]) -> type[Envelope[E]]:
    """``Envelope[event_cls]``, built once per event type and kept.

    pydantic caches a parametrized model only weakly and the class sits in reference cycles, so
    the garbage collector drops it between events and the next use built it again, schema and
    all (17 % of a bulk create's time in mailbox-svc, every publish and parse paid it now and then).
    """
    model = _MODELS.get(event_cls)
    if model is None:
        model = _MODELS[event_cls] = Envelope[event_cls]  # type: ignore[valid-type]
    return model


def make_envelope(
    data: E,
    producer: str,
    *,
    correlation_id: str | None = None,
    event_id: uuid.UUID | None = None,
    occurred_at: datetime | None = None,
    actor: str | None = None,
) -> Envelope[E]:
    eid = event_id or uuid.uuid4()
    model = envelope_model(type(data))
    return model(
        id=eid,
        type=data.TYPE,
        schema_version=data.VERSION,
        occurred_at=occurred_at or datetime.now(UTC),
        correlation_id=correlation_id or str(eid),
        producer=producer,
        actor=actor,
        data=data,
    )


def _field_errors(exc: ValidationError) -> list[FieldError]:
    return [
        FieldError(loc=".".join(str(p) for p in err["loc"]) or "body", msg=err["msg"])
        for err in exc.errors(include_url=False, include_input=False)
    ]


def parse_envelope(raw: bytes | str, expected: type[E]) -> Envelope[E]:
    """Decode and validate one message as an event of type ``expected``.

    Raises :class:`EnvelopeError` with field-level reasons for invalid UTF-8 or JSON, a wrong event
    type, an unknown schema version or any invalid field.

    A valid message is parsed once, straight from its bytes by pydantic's JSON parser (every
    consumer parses every message: the hot path); only a message that fails that is read again
    step by step, to name what is wrong.
    """
    model = envelope_model(expected)
    try:
        envelope = model.model_validate_json(raw)
    except ValidationError:
        pass
    else:
        if envelope.type == expected.TYPE and envelope.schema_version <= expected.VERSION:
            return envelope
    return _parse_slowly(raw, expected, model)


def _parse_slowly(raw: bytes | str, expected: type[E], model: type[Envelope[E]]) -> Envelope[E]:
    """The precise error for a message the fast path refused (or the envelope, if it is valid)."""
    try:
        doc: Any = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    except UnicodeDecodeError as exc:
        raise EnvelopeError("body is not UTF-8", [FieldError(loc="body", msg=str(exc))]) from None
    except json.JSONDecodeError as exc:
        raise EnvelopeError("body is not JSON", [FieldError(loc="body", msg=exc.msg)]) from None
    if not isinstance(doc, dict):
        raise EnvelopeError("body is not a JSON object", [FieldError(loc="body", msg="object expected")])
    if doc.get("type") != expected.TYPE:
        known = doc.get("type") in EVENT_TYPES
        msg = f"expected {expected.TYPE!r}, got {doc.get('type')!r}" + ("" if known else " (unknown)")
        raise EnvelopeError("wrong event type", [FieldError(loc="type", msg=msg)])
    version = doc.get("schema_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > expected.VERSION:
        raise EnvelopeError(
            "unknown schema version",
            [FieldError(loc="schema_version", msg=f"{version} is newer than {expected.VERSION}")],
        )
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        raise EnvelopeError("invalid event", _field_errors(exc)) from None
