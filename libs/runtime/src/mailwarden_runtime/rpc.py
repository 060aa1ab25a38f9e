"""NATS request-reply for every operation, so other systems (and the CLI) need only NATS.

A request is JSON validated against a pydantic model; the reply is always JSON:
``{"ok": true, "result": ...}`` or ``{"ok": false, "status": 422, "detail": ..., "errors": [...]}``,
with the same field-level errors as the HTTP API.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from faststream.nats import NatsBroker, NatsMessage
from pydantic import BaseModel, ValidationError

from mailwarden_runtime.http import DomainError, FieldProblem, Problem, field_problems

log = logging.getLogger(__name__)

Req = TypeVar("Req", bound=BaseModel)
RPC_PREFIX = "mailwarden.rpc"


def rpc_subject(service: str, operation: str) -> str:
    return f"{RPC_PREFIX}.{service}.{operation}"


def _reply(status: int, detail: str, errors: list[FieldProblem] | None = None) -> bytes:
    body = {"ok": False, "status": status, **Problem(detail=detail, errors=errors or []).model_dump()}
    return json.dumps(body).encode()


def register_rpc(
    broker: NatsBroker,
    subject: str,
    model: type[Req],
    handler: Callable[[Req], Awaitable[Any]],
    queue: str,
) -> None:
    """Serve ``subject`` with ``handler``; replicas share requests through the queue group."""

    async def on_request(msg: NatsMessage) -> None:
        try:
            raw = json.loads(msg.body or b"{}")
            request = model.model_validate(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            reply = _reply(422, "invalid request", [FieldProblem(field="body", message="not JSON")])
        except ValidationError as exc:
            reply = _reply(422, "invalid request", field_problems(list(exc.errors())))
        else:
            try:
                result = await handler(request)
            except DomainError as exc:
                reply = _reply(exc.status, exc.detail, exc.problems())
            except Exception:
                log.exception("rpc handler failed", extra={"subject": subject})
                reply = _reply(500, "internal error")
            else:
                payload = result.model_dump(mode="json") if isinstance(result, BaseModel) else result
                reply = json.dumps({"ok": True, "result": payload}, default=str).encode()
        if msg.reply_to:
            await broker.publish(reply, msg.reply_to)

    broker.subscriber(subject, queue=queue, no_reply=True)(on_request)
