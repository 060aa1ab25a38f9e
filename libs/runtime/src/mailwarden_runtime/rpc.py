"""NATS request-reply for every operation, so other systems (and the CLI) need only NATS.

A request is JSON validated against a pydantic model; the reply is always JSON:
``{"ok": true, "result": ...}`` or ``{"ok": false, "status": 422, "detail": ..., "errors": [...]}``,
with the same field-level errors as the HTTP API.

Each operation is a queue subscription (replicas share the requests); every request is handled in
its own task, at most ``concurrency`` at once per process. A subscription's callbacks run one after
another in nats-py, so while every slot is busy new requests wait in the subscription's buffer.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from opentelemetry.trace import SpanKind
from pydantic import BaseModel, ValidationError

from mailwarden_runtime.auth.context import acting_as
from mailwarden_runtime.auth.principal import Principal
from mailwarden_runtime.http import DomainError, FieldProblem, Problem, field_problems, malformed_json
from mailwarden_runtime.tracing import attached, correlated, tracer

log = logging.getLogger(__name__)

RPC_PREFIX = "mailwarden.rpc"
RequestHeaders = Mapping[str, str]
Reply = Callable[[str, bytes], Awaitable[None]]
Admit = Callable[[RequestHeaders], Awaitable[Principal | None]]


def rpc_subject(service: str, operation: str) -> str:
    return f"{RPC_PREFIX}.{service}.{operation}"


@dataclass(frozen=True)
class RpcOperation:
    """One operation served on ``subject``: what it accepts and who answers (for serving and docs)."""

    subject: str
    model: type[BaseModel]
    handle: Callable[[BaseModel, RequestHeaders], Awaitable[Any]]
    summary: str = ""
    returns: Any = None  # the handler's return annotation, for the docs (None: unknown)
    admit: Admit | None = None
    """Checks the caller from the headers before the body is even parsed (401/403 as ``DomainError``);
    the caller it returns is current while the handler runs."""


def _error(status: int, detail: str, errors: list[FieldProblem] | None = None) -> bytes:
    body = {"ok": False, "status": status, **Problem(detail=detail, errors=errors or []).model_dump()}
    return json.dumps(body).encode()


async def answer(op: RpcOperation, body: bytes, headers: RequestHeaders) -> bytes:
    """The reply to one request: the handler's result, or the error it maps to. Never raises."""
    principal = None
    if op.admit is not None:
        try:
            principal = await op.admit(headers)
        except DomainError as exc:  # who asks is checked before what they send is read
            return _error(exc.status, exc.detail, exc.problems())
        except Exception:
            log.exception("rpc admission failed", extra={"subject": op.subject})
            return _error(500, "internal error")
    with acting_as(principal):
        return await _answer(op, body, headers)


async def _answer(op: RpcOperation, body: bytes, headers: RequestHeaders) -> bytes:
    try:
        request = op.model.model_validate(json.loads(body or b"{}"))
    except json.JSONDecodeError as exc:
        return _error(422, "invalid request", [malformed_json(exc.doc, exc.pos)])
    except UnicodeDecodeError:
        return _error(422, "invalid request", [FieldProblem(field="body", message="not UTF-8 text")])
    except ValidationError as exc:
        return _error(422, "invalid request", field_problems(list(exc.errors())))
    try:
        result = await op.handle(request, headers)
    except DomainError as exc:
        return _error(exc.status, exc.detail, exc.problems())
    except Exception:
        log.exception("rpc handler failed", extra={"subject": op.subject})
        return _error(500, "internal error")
    payload = result.model_dump(mode="json") if isinstance(result, BaseModel) else result
    return json.dumps({"ok": True, "result": payload}, default=str).encode()


class RpcServer:
    """Serves a service's operations on NATS, with bounded concurrency and a bounded stop."""

    def __init__(self, queue: str, reply: Reply, concurrency: int = 32) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.queue = queue
        self._reply = reply
        self._operations: dict[str, RpcOperation] = {}
        self._slots = asyncio.Semaphore(concurrency)
        self._subs: list[Subscription] = []
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def operations(self) -> tuple[RpcOperation, ...]:
        return tuple(self._operations.values())

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def add(self, op: RpcOperation) -> None:
        if op.subject in self._operations:
            raise ValueError(f"{op.subject} is served twice")
        self._operations[op.subject] = op

    async def start(self, nc: Client) -> None:
        for op in self._operations.values():
            self._subs.append(await nc.subscribe(op.subject, queue=self.queue, cb=self._receiver(op)))
        if self._subs:
            await nc.flush()  # the server knows our interest before start returns: no "no responders"

    def _receiver(self, op: RpcOperation) -> Callable[[Msg], Awaitable[None]]:
        async def on_request(msg: Msg) -> None:
            await self._slots.acquire()  # back-pressure: the next request waits in the buffer
            task = asyncio.create_task(self._handle(op, msg), name=f"rpc {op.subject}")
            self._tasks.add(task)
            task.add_done_callback(self._done)

        return on_request

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("rpc reply failed", exc_info=task.exception())

    async def _handle(self, op: RpcOperation, msg: Msg) -> None:
        headers = dict(msg.headers or {})
        with (
            attached(headers),
            correlated(headers.get("correlation_id") or headers.get("X-Correlation-Id")),
            tracer().start_as_current_span(
                f"{op.subject} process",
                kind=SpanKind.CONSUMER,
                attributes={"messaging.system": "nats", "messaging.destination.name": op.subject},
            ),
        ):
            reply = await answer(op, msg.data, headers)
        if msg.reply:
            await self._reply(msg.reply, reply)

    async def stop_receiving(self) -> None:
        """Take no more requests (idempotent); those in flight go on (see :meth:`wait`)."""
        subs, self._subs = self._subs, []
        for sub in subs:
            try:
                await sub.unsubscribe()
            except Exception as exc:  # the connection is gone: nothing arrives anyway
                log.debug("rpc unsubscribe failed: %r", exc)

    async def wait(self, grace_s: float) -> None:
        """Let requests in flight answer for ``grace_s``, then cancel the rest (their callers time out)."""
        if not self._tasks:
            return
        _, running = await asyncio.wait(set(self._tasks), timeout=max(grace_s, 0.0))
        for task in running:
            task.cancel()
        if running:
            log.warning("rpc requests still running after the grace period", extra={"count": len(running)})
            await asyncio.wait(running, timeout=1.0)
