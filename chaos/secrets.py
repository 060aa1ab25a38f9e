"""D1: a canary password through every path, searched for everywhere afterwards.

Paths: create (HTTP and NATS request-reply, valid and invalid), a successful test (IMAPS LOGIN,
SMTP AUTH), an authentication failure, a TLS failure (self-signed certificate), a timeout (a
server that never greets), a dead letter (a request with an unknown schema version, carrying
the sealed canary) and an online key rotation. Logging is at DEBUG on every logger, formatted
as in production (the runtime's JSON formatter and redacting filter).

Searched: the logs, every message of every stream (dead letters decoded), every API response,
every service's /metrics and a dump of every service database; in plain text, JSON-escaped,
URL-encoded and base64 (the password, and SASL PLAIN's ``\\0user\\0password``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import logging
import ssl
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import httpx
from bson import json_util

from chaos.harness import Figure, MailTarget, System, owner, private_nats
from chaos.infra import Infra
from mailwarden_runtime.auth import bearer_header
from mailwarden_runtime.crypto import KeyRing
from mailwarden_runtime.logs import JsonFormatter, RedactingFilter
from mailwarden_servers import SmtpServer, eventually


def variants(user: str, secret: str) -> dict[str, str]:
    """Every form in which a leaked password could appear."""
    raw = secret.encode()
    forms = {
        "plain": secret,
        "json": json.dumps(secret)[1:-1],
        "url": quote(secret, safe=""),
        "url+": quote_plus(secret),
    }
    for name, data in (
        ("b64", raw),
        ("sasl", b"\0" + user.encode() + b"\0" + raw),
        ("sasl-authz", user.encode() + b"\0" + user.encode() + b"\0" + raw),
    ):
        forms[name] = base64.b64encode(data).decode()
        forms[name + "-url"] = base64.urlsafe_b64encode(data).decode().rstrip("=")
    return forms


@contextlib.asynccontextmanager
async def _tls_server(cert: Any) -> AsyncIterator[int]:
    """Completes a TLS handshake with ``cert`` (e.g. self-signed), then says nothing."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert.cert, cert.key)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.read(1024)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
    async with server:
        yield server.sockets[0].getsockname()[1]


@contextlib.asynccontextmanager
async def _silent_server() -> AsyncIterator[int]:
    """Accepts and never greets: the tester's greeting timeout."""
    held: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        with contextlib.suppress(Exception):
            await reader.read()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]
    for w in held:
        w.close()


class _Capture:
    """Production log formatting (JSON + redaction) at DEBUG on every logger, into memory."""

    def __init__(self) -> None:
        self.buffer = io.StringIO()
        self.handler = logging.StreamHandler(self.buffer)
        self.handler.setFormatter(JsonFormatter("chaos"))
        self.handler.addFilter(RedactingFilter())
        self.handler.setLevel(logging.DEBUG)
        self._levels: dict[str, int] = {}

    def __enter__(self) -> _Capture:
        root = logging.getLogger()
        self._levels[""] = root.level
        root.setLevel(logging.DEBUG)
        root.addHandler(self.handler)
        for name, logger in list(logging.Logger.manager.loggerDict.items()):
            if isinstance(logger, logging.Logger):
                self._levels[name] = logger.level
                logger.setLevel(logging.DEBUG)
        return self

    def __exit__(self, *exc: object) -> None:
        root = logging.getLogger()
        root.removeHandler(self.handler)
        for name, level in self._levels.items():
            logging.getLogger(name or None).setLevel(level)

    def debug_everywhere(self) -> None:
        """Loggers created after start (e.g. by a restarted app) are put on DEBUG too."""
        for name, logger in list(logging.Logger.manager.loggerDict.items()):
            if isinstance(logger, logging.Logger) and name not in self._levels:
                self._levels[name] = logger.level
                logger.setLevel(logging.DEBUG)


async def canary(infra: Infra, workdir: Path, smtp: SmtpServer) -> Figure:
    fig = Figure("D1 canary password")
    user = f"canary{uuid.uuid4().hex[:6]}"
    secret = f'Cn{uuid.uuid4().hex[:10]}"/+ é\\'
    infra.dovecot.add_user(user, secret)
    smtp.set_password(user, secret)
    seen: list[str] = []
    env = {"MW_TESTER_STEP_TIMEOUT_S": "1.5", "MW_LOG_LEVEL": "DEBUG"}
    with _Capture() as logs:
        async with (
            _tls_server(infra.certs.self_signed) as tls_port,
            _silent_server() as silent_port,
            private_nats(workdir / "nats") as nats_server,
            System(workdir, nats_server.url, infra.mongo_uri, infra.certs, env=env) as system,
        ):
            logs.debug_everywhere()

            async def call(svc: str, method: str, url: str, **kw: Any) -> httpx.Response:
                resp = await system.http(svc).request(method, url, **kw)
                seen.append(resp.text)
                return resp

            good = MailTarget("127.0.0.1", infra.dovecot.imaps_port, infra.smtp_starttls_port, user, secret)
            bad_tls = MailTarget("127.0.0.1", tls_port, tls_port, user, secret)
            silent = MailTarget("127.0.0.1", silent_port, silent_port, user, secret)
            await system.allow_ports([*infra.mail_ports, tls_port, silent_port])
            tag = uuid.uuid4().hex[:6]
            profiles = {
                "success": await system.create_profile(good, tag + "ok"),
                "tls": await system.create_profile(bad_tls, tag + "tls"),
                "timeout": await system.create_profile(silent, tag + "to"),
            }
            cases = {  # mailbox -> (profile, username)
                f"c{tag}-ok": ("success", user),
                f"c{tag}-auth": ("success", "alice"),  # alice's server password is not the canary
                f"c{tag}-tls": ("tls", user),
                f"c{tag}-to": ("timeout", user),
            }
            for mid, (case, login) in cases.items():
                body = {
                    "mailbox_id": mid,
                    "email": f"{mid}@mail.test",
                    "owner": owner("user", f"o{mid}"),
                    "profile_id": profiles[case],
                    "credentials": {"username": login, "password": secret},
                }
                resp = await call("mailbox-svc", "POST", "/mailboxes", json=body)
                assert resp.status_code == 201, resp.text
                await call("mailbox-svc", "POST", "/mailboxes", json={**body, "email": "not an address"})
                await call("mailbox-svc", "POST", "/mailboxes", json=body)  # 409: exists
            # The same over NATS request-reply, invalid on purpose (the reply must not echo it).
            reply = await system.nc.request(
                "mailwarden.rpc.mailbox-svc.create",
                json.dumps(
                    {"email": "x", "credentials": {"username": user, "password": secret, "bogus": 1}}
                ).encode(),
                timeout=10,
                headers=bearer_header(system.token),
            )
            seen.append(reply.data.decode())
            ids = list(cases)
            await call("mailbox-svc", "POST", "/mailboxes/approve", json={"mailbox_ids": ids})
            await call("mailbox-svc", "POST", "/mailboxes/test", json={"mailbox_ids": ids})

            async def all_tested() -> bool:
                n = await system.db("mailbox-svc").mailboxes.count_documents(
                    {"_id": {"$in": ids}, "last_test_completed_at": {"$ne": None}, "pending_test_id": None}
                )
                return bool(n == len(ids))

            await eventually(all_tested, "the four tests", 60)
            outcomes = {}
            for mid in ids:
                view = (await call("mailbox-svc", "GET", f"/mailboxes/{mid}")).json()
                await call("mailbox-svc", "GET", f"/mailboxes/{mid}/tests")
                outcomes[mid.rsplit("-", 1)[1]] = (view.get("last_error") or {}).get("code") or view[
                    "incoming_status"
                ]
            fig.figures["outcomes"] = outcomes
            fig.check(outcomes.get("ok") == "success", f"the canary login did not succeed: {outcomes}")
            fig.check(outcomes.get("auth") == "auth_failed", f"no auth failure: {outcomes}")
            fig.check(outcomes.get("tls") not in (None, "success"), f"no TLS failure: {outcomes}")
            fig.check(outcomes.get("to") not in (None, "success"), f"no timeout: {outcomes}")

            # A dead letter carrying the sealed canary: a request with a schema version from the future.
            requests = await system.stream_messages("MW_TESTS", "mailwarden.test.requested")
            doc = json.loads(requests[0][1])
            doc["schema_version"] = 99
            await system.nc.jetstream().publish("mailwarden.test.requested", json.dumps(doc).encode())

            async def dead() -> bool:
                return bool((await system.nc.jetstream().stream_info("MW_DLQ")).state.messages >= 1)

            await eventually(dead, "the dead letter", 30)

            # Online key rotation: a new primary key, the old one kept to open existing ciphertexts.
            new_ring = f"{KeyRing.generate_key_text('mailbox-cred2')},{system.keys.mailbox_credential}"
            await system.restart("mailbox-svc", {"MW_MAILBOX_CREDENTIAL_KEYS": new_ring})
            logs.debug_everywhere()
            rotated = await call("mailbox-svc", "POST", "/mailboxes/rotate-keys")
            fig.figures["rotated"] = rotated.json().get("rotated")
            fig.check(rotated.status_code == 200 and not rotated.json().get("unreadable"), "rotation failed")
            await system.wait_quiet(30)

            for name in system.services:
                seen.append((await system.http(name).get("/metrics")).text)
            messages = 0
            for stream in ("MW_CONFIG", "MW_TESTS", "MW_ALERTS", "MW_DLQ"):
                for _, raw in await system.stream_messages(stream):
                    messages += 1
                    seen.append(raw.decode(errors="replace"))
                    if stream == "MW_DLQ":
                        kept = json.loads(raw)["data"]["body_b64"]
                        seen.append(base64.b64decode(kept).decode(errors="replace"))
            documents = 0
            for service in ("profile-svc", "mailbox-svc", "alert-svc"):
                db = system.db(service)
                for coll in await db.list_collection_names():
                    async for d in db[coll].find({}):
                        documents += 1
                        seen.append(json_util.dumps(d))
    log_text = logs.buffer.getvalue()
    haystacks = {"logs": log_text, "everything else": "\n".join(seen)}
    fig.figures["log_lines"] = log_text.count("\n")
    fig.figures["stream_messages"] = messages
    fig.figures["db_documents"] = documents
    fig.figures["api_bodies_and_metrics"] = len(seen) - messages - documents
    hits = [
        f"{form} in {where}"
        for where, text in haystacks.items()
        for form, value in variants(user, secret).items()
        if value in text
    ]
    fig.figures["hits"] = len(hits)
    fig.check(not hits, f"the canary leaked: {hits}")
    fig.check(log_text.count("\n") > 100, "hardly any logs: DEBUG logging was not on")
    return fig
