"""Request-reply over NATS, and every way it can fail turned into one clear message.

Each admin operation is a request to ``mailwarden.rpc.<service>.<operation>``; the reply is
``{"ok": true, "result": ...}`` or ``{"ok": false, "status", "detail", "errors": [{"field", "message"}]}``.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError, NoServersError
from nats.errors import TimeoutError as NatsTimeout

RPC_PREFIX = "mailwarden.rpc"
DEFAULT_URL = "nats://127.0.0.1:4222"
DEFAULT_TOKEN_FILE = Path(os.environ.get("MW_DATA_DIR", ".data")) / "admin-token.json"
# where `make up` (.data) and `make demo` (.demo) keep the administrator token, and the data folder itself
TOKEN_FILES = (DEFAULT_TOKEN_FILE, Path(".demo/admin-token.json"), Path("admin-token.json"))


class CliError(Exception):
    """A failure the user must see: one line each, and the exit code it ends with."""

    def __init__(self, lines: list[str], code: int = 1) -> None:
        super().__init__(lines[0] if lines else "failed")
        self.lines = lines
        self.code = code


@dataclass(frozen=True)
class FieldProblem:
    field: str
    message: str


class RpcError(CliError):
    """A service answered ``ok: false``: refused input (422), unknown id (404), conflict (409), ..."""

    def __init__(
        self,
        service: str,
        status: int,
        detail: str,
        errors: list[FieldProblem],
        payload: Mapping[str, Any] | None = None,
    ) -> None:
        self.service = service
        self.status = status
        self.detail = detail
        self.errors = errors
        super().__init__(_describe(service, status, detail, errors, payload or {}))


def _describe(
    service: str, status: int, detail: str, errors: list[FieldProblem], payload: Mapping[str, Any]
) -> list[str]:
    if status == 404:
        named = [f"{e.field} {payload[e.field]}" for e in errors if isinstance(payload.get(e.field), str)]
        return [f"not found: {detail}" + (f" ({', '.join(named)})" if named else "")]
    if status == 401:
        return [
            f"not authenticated by {service}: {detail}",
            f"  give an API token: MW_TOKEN=<token>, or --token-file (default {DEFAULT_TOKEN_FILE})",
        ]
    if status == 403:
        return [f"not allowed: {detail}"]
    if status in (400, 409, 422):
        unique = list(dict.fromkeys(errors))  # each refused field once
        # A detail that only repeats the fields' messages is not printed again above them.
        head = "refused" if unique and all(e.message in detail for e in unique) else f"refused: {detail}"
        return [head, *(f"  {e.field}: {e.message}" for e in unique)]
    return [f"{service} failed ({status}): {detail}"]


@dataclass
class Options:
    """The global options every command shares."""

    nats_url: str = DEFAULT_URL
    timeout: float = 10.0
    token: str | None = None


def read_token(explicit: str | None, token_file: Path) -> str | None:
    """``MW_TOKEN`` (or ``--token``) first, else the token file ``make up`` wrote at first start."""
    if explicit:
        return explicit.strip()
    candidates = (token_file,) if token_file != DEFAULT_TOKEN_FILE else TOKEN_FILES
    for path in candidates:
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        token = doc.get("token") if isinstance(doc, dict) else None
        if isinstance(token, str) and token:
            return token
    return None


class Bus:
    """One NATS connection for one command."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self._nc: Client | None = None
        self.closed = asyncio.Event()  # set when the connection ends, so long waits can stop

    def lost(self) -> CliError:
        return CliError([f"lost the connection to NATS at {self.options.nats_url}"])

    @property
    def nc(self) -> Client:
        if self._nc is None:
            raise RuntimeError("not connected")
        return self._nc

    async def __aenter__(self) -> Bus:
        url = self.options.nats_url
        errors: list[Exception] = []

        async def remember(exc: Exception) -> None:  # instead of nats-py's traceback per error
            errors.append(exc)

        async def on_close() -> None:
            self.closed.set()

        try:
            self._nc = await asyncio.wait_for(
                nats.connect(
                    url,
                    name="mailwarden-cli",
                    connect_timeout=min(self.options.timeout, 5.0),
                    allow_reconnect=False,
                    max_reconnect_attempts=1,  # 0 would mean: forever
                    reconnect_time_wait=0.1,
                    error_cb=remember,
                    disconnected_cb=on_close,
                    closed_cb=on_close,
                ),
                timeout=self.options.timeout,
            )
        except (NoServersError, OSError, NatsError, TimeoutError) as exc:
            cause = errors[-1] if errors else exc
            reason = str(cause) or type(cause).__name__
            raise CliError([f"cannot reach NATS at {url}: {reason}"]) from None
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.close()

    async def call(self, service: str, operation: str, payload: Mapping[str, Any] | None = None) -> Any:
        """Send one request and return its ``result``; raise :class:`CliError` for anything else."""
        subject = f"{RPC_PREFIX}.{service}.{operation}"
        body = json.dumps(dict(payload or {}), default=str).encode()
        try:
            headers = {"Authorization": f"Bearer {self.options.token}"} if self.options.token else None
            msg = await self.nc.request(subject, body, timeout=self.options.timeout, headers=headers)
        except NoRespondersError:
            raise CliError([f"no {service} is answering on {subject}: is {service} running?"]) from None
        except (NatsTimeout, TimeoutError):
            raise CliError(
                [f"{service} did not answer within {self.options.timeout:g} s ({subject})"]
            ) from None
        except NatsError:
            raise self.lost() from None
        try:
            reply = json.loads(msg.data)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CliError([f"{service} sent a reply that is not JSON ({subject})"]) from None
        if not isinstance(reply, dict):
            raise CliError([f"{service} sent an unexpected reply ({subject})"])
        if reply.get("ok") is True:
            return reply.get("result")
        errors = [
            FieldProblem(str(e.get("field", "")), str(e.get("message", "")))
            for e in reply.get("errors") or []
            if isinstance(e, dict)
        ]
        raise RpcError(
            service, int(reply.get("status") or 500), str(reply.get("detail") or "failed"), errors, payload
        )
