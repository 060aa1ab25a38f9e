"""D4: the production NATS permissions, enforced by a real nats-server.

The config is rendered from deploy/helm/nats-values.yaml (deploy/nats/render.py). Forbidden
operations (tester-svc or alert-svc publishing a TestRequested, tester-svc reading alerts, a
service publishing another's events) must be refused by the server; the allowed ones must work,
shown by a whole Test & Enable flow in which every service connects as its own user.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import nats

from chaos.harness import Figure, System, private_nats
from chaos.infra import Infra, direct_target
from contracts.alerting import AlertMarkedRead
from contracts.envelope import make_envelope
from contracts.models import OwnerKind
from contracts.subjects import WALL_READ
from mailwarden_runtime.audit import AuditQuery, audit_trail
from mailwarden_runtime.bus import ensure_streams
from mailwarden_runtime.settings import ServiceSettings
from mailwarden_servers import eventually

RENDER = Path(__file__).resolve().parents[1] / "deploy" / "nats" / "render.py"
USERS = {
    "profile-svc": "PROFILE_SVC_PASSWORD",
    "mailbox-svc": "MAILBOX_SVC_PASSWORD",
    "tester-svc": "TESTER_SVC_PASSWORD",
    "alert-svc": "ALERT_SVC_PASSWORD",
    "sender-svc": "SENDER_SVC_PASSWORD",
    "sync-svc": "SYNC_SVC_PASSWORD",
    "mailwarden-cli": "CLI_PASSWORD",
    "console": "CONSOLE_PASSWORD",
    "integration": "INTEGRATION_PASSWORD",
}
SERVICES = ("profile-svc", "mailbox-svc", "tester-svc", "alert-svc", "sender-svc")
"""The services the flow runs, each connected as its own user."""
# (user, operation, subject) that the production config must refuse.
FORBIDDEN = (
    ("tester-svc", "pub", "mailwarden.test.requested"),
    ("alert-svc", "pub", "mailwarden.test.requested"),
    ("profile-svc", "pub", "mailwarden.test.requested"),
    ("tester-svc", "pub", "mailwarden.mailbox.status_changed"),
    ("tester-svc", "pub", "mailwarden.alerts.user.u1.error"),
    ("alert-svc", "pub", "mailwarden.test.completed"),
    ("profile-svc", "pub", "mailwarden.mailbox.created"),
    ("mailwarden-cli", "pub", "mailwarden.profile.created"),
    ("tester-svc", "sub", "mailwarden.alerts.>"),
    ("tester-svc", "sub", ">"),
    ("alert-svc", "sub", "mailwarden.rpc.mailbox-svc.get"),
    # A send request on the stream carries no identity sender-svc could check (docs/access.md):
    # nobody publishes one; integrations call the token-checked `send` operation instead.
    *((user, "pub", "mailwarden.send.requested") for user in USERS),
    ("integration", "pub", "mailwarden.send.sent.mbx1"),
    ("integration", "pub", "mailwarden.mailbox.created"),
    ("integration", "pub", "mailwarden.rpc.mailbox-svc.login"),
    ("integration", "pub", "mailwarden.rpc.profile-svc.tokens_create"),
    ("integration", "sub", "mailwarden.rpc.sender-svc.send"),
)


def render_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mailwarden_nats_render", RENDER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Violations(logging.Handler):
    """Counts permission violations the services' NATS clients report."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage() + " " + str(record.exc_info[1] if record.exc_info else "")
        if "permissions violation" in text.lower():
            self.lines.append(text[:300])


async def _refused(url: str, op: str, subject: str) -> bool:
    """True when the server answers the operation with a permissions violation."""
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    nc = await nats.connect(url, error_cb=on_error, allow_reconnect=False)
    try:
        if op == "pub":
            await nc.publish(subject, b"{}")
        else:
            await nc.subscribe(subject)
        await nc.flush()
        await asyncio.sleep(0.2)
    finally:
        await nc.close()
    return any("permissions violation" in e.lower() for e in errors)


@asynccontextmanager
async def production_nats(workdir: Path, values: Path | None = None) -> AsyncIterator[Callable[[str], str]]:
    """nats-server with the rendered production config; yields ``url(user)``, streams created."""
    render = render_module()
    passwords = {var: secrets.token_hex(12) for var in render.variables()}
    text = render.render(passwords=passwords, **({"values_path": values} if values else {}))
    async with private_nats(workdir / "nats", text) as server:

        def url(user: str) -> str:
            return f"nats://{user}:{passwords[USERS[user]]}@127.0.0.1:{server.port}"

        nc = await nats.connect(url("mailbox-svc"))  # the streams, as mailbox-svc creates them at start
        await ensure_streams(nc, ServiceSettings(nats_url=url("mailbox-svc")))
        await nc.close()
        yield url


async def refusals(workdir: Path) -> Figure:
    """Forbidden publishes and subscriptions are refused by the server; a tester's result is not."""
    fig = Figure("D4 NATS permissions: refusals")
    async with production_nats(workdir) as url:
        refused = [f"{u} {op} {s}" for u, op, s in FORBIDDEN if await _refused(url(u), op, s)]
        allowed_through = [f"{u} {op} {s}" for u, op, s in FORBIDDEN if f"{u} {op} {s}" not in refused]
        fig.figures["forbidden_refused"] = f"{len(refused)}/{len(FORBIDDEN)}"
        fig.check(not allowed_through, f"allowed although forbidden: {allowed_through}")
        tester = await nats.connect(url("tester-svc"))
        try:
            ack = await tester.jetstream().publish("mailwarden.test.completed", b"{}")
            fig.figures["tester_publishes_result"] = f"stored in {ack.stream} #{ack.seq}"
        except Exception as exc:
            fig.check(False, f"tester-svc may not publish its results: {exc!r}")
        finally:
            await tester.close()
        anonymous_refused = False
        try:
            port = url("tester-svc").rsplit(":", 1)[1]
            await nats.connect(f"nats://127.0.0.1:{port}", allow_reconnect=False, max_reconnect_attempts=0)
        except Exception:
            anonymous_refused = True
        fig.figures["anonymous_refused"] = anonymous_refused
        fig.check(anonymous_refused, "a client without a user could connect")
    return fig


async def flow_as_own_users(infra: Infra, workdir: Path, values: Path | None = None) -> Figure:
    """The allowed path: a whole Test & Enable flow, each service connected as its own user."""
    fig = Figure("D4 NATS permissions: flow")
    watcher = _Violations()
    async with production_nats(workdir, values) as url:
        logging.getLogger().addHandler(watcher)
        started = time.monotonic()
        try:
            service_env = {name: {"MW_NATS_URL": url(name)} for name in SERVICES}
            async with System(
                workdir,
                url("mailwarden-cli"),
                infra.mongo_uri,
                infra.certs,
                service_env=service_env,
                token_nats_url=url("profile-svc"),  # the token bucket's writer
            ) as system:
                await _one_test(system, infra)
                fig.figures["flow"] = "tested and alerted"
        except Exception as exc:
            fig.check(False, f"the flow failed under production permissions: {exc!r}"[:300])
        finally:
            logging.getLogger().removeHandler(watcher)
        fig.figures["violations_during_flow"] = len(watcher.lines)
        fig.figures["seconds"] = round(time.monotonic() - started, 1)
        fig.check(not watcher.lines, f"services hit permission violations: {sorted(set(watcher.lines))[:5]}")
    return fig


async def _one_test(system: System, infra: Infra) -> None:
    tag = uuid.uuid4().hex[:6]
    target = direct_target(infra)
    await system.allow_ports(infra.mail_ports)
    profile_id = await system.create_profile(target, tag)
    (mailbox_id,) = await system.create_mailboxes(profile_id, 1, tag, target.user, target.password)
    resp = await system.http("mailbox-svc").post(f"/mailboxes/{mailbox_id}/test")
    assert resp.status_code == 202, resp.text
    await system.wait_tested(profile_id, 1, 60)

    async def alerted() -> Any:
        return await system.db("alert-svc").alerts.count_documents({"mailbox_id": mailbox_id})

    await eventually(alerted, "the success alert", 30)


async def integration_and_audit(workdir: Path) -> Figure:
    """What an integration may do on the bus, and the audit read as profile-svc, both allowed.

    The integration answers EmailTracked (stored), reads the email, its raw bytes and the send
    outcomes, and asks sender-svc's ``send`` operation; profile-svc reads every audited stream.
    """
    fig = Figure("D4 NATS permissions: integration and audit")
    async with production_nats(workdir) as url:
        errors: list[str] = []

        async def on_error(exc: Exception) -> None:
            errors.append(str(exc))

        sync = await nats.connect(url("sync-svc"))
        alert = await nats.connect(url("alert-svc"))
        crm = await nats.connect(url("integration"), error_cb=on_error)
        profile = await nats.connect(url("profile-svc"), error_cb=on_error)
        try:
            raw = await sync.jetstream().create_object_store("MW_EMAIL_RAW")
            await raw.put("m1/1", b"Subject: hi\r\n\r\nhello\r\n")
            await sync.jetstream().publish("mailwarden.email.received.m1", b"{}")
            wall = make_envelope(
                AlertMarkedRead(alert_id="a1", recipient_kind=OwnerKind.USER, recipient_id="u1", read=True),
                "alert-svc",
                actor="token:someone",
            )
            await alert.jetstream().publish(WALL_READ, wall.to_bytes())

            js = crm.jetstream()
            ack = await js.publish("mailwarden.email.tracked", b"{}")
            fig.figures["integration_tracked"] = f"stored in {ack.stream}"
            sub = await js.subscribe("mailwarden.email.received.>", ordered_consumer=True)
            got = await sub.next_msg(timeout=5)
            await sub.unsubscribe()
            fig.check(got.subject == "mailwarden.email.received.m1", f"read {got.subject}")
            body = (await (await js.object_store("MW_EMAIL_RAW")).get("m1/1")).data
            fig.check(body is not None and b"hello" in body, "the raw message could not be read")
            outcomes = await js.subscribe("mailwarden.send.>", ordered_consumer=True)
            await outcomes.unsubscribe()
            with contextlib.suppress(nats.errors.NoRespondersError, nats.errors.TimeoutError):
                await crm.request("mailwarden.rpc.sender-svc.send", b"{}", timeout=0.5)

            trail = await audit_trail(profile, AuditQuery(since_hours=1))
            fig.figures["audit_entries"] = len(trail.items)
            fig.check(
                [(e.event, e.actor) for e in trail.items] == [("AlertMarkedRead", "token:someone")],
                f"the audit read {[(e.event, e.actor) for e in trail.items]}",
            )
            await crm.flush()
            await profile.flush()
            await asyncio.sleep(0.2)
        except Exception as exc:
            fig.check(False, f"refused or failed: {exc!r}"[:300])
        finally:
            for nc in (sync, alert, crm, profile):
                await nc.close()
        violations = [e for e in errors if "permissions violation" in e.lower()]
        fig.figures["violations"] = len(violations)
        fig.check(not violations, f"permission violations: {violations[:3]}")
    return fig
