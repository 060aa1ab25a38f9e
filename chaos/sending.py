"""A10: kill -9 sender-svc at each point of a send; never a duplicate mail, uncertain as its own event.

For each point, a fresh sender process (uvicorn) on its own NATS and database sends one mail
from a mailbox to an in-process SMTP server (STARTTLS + AUTH) whose replies the scenario holds
back, and is killed (SIGKILL) there:

- ``before_smtp``: the send is claimed and the sender is asking mailbox-svc for the login (the
  login desk does not answer yet): nothing reached the server.
- ``after_rcpt``: logged in, MAIL and RCPT sent, their replies held: nothing handed over.
- ``after_data``: the server has the message, its reply to the final dot is held.
- ``after_outcome``: the server accepted it and the outcome is stored, but NATS is down, so its
  event waits in the send's outbox (NATS killed before the reply was released).

A second sender is then started. Expected: ``before_smtp`` and ``after_rcpt`` are sent once when
the dead sender's claim runs out (``EmailSent``); ``after_data`` is reported
``EmailSendUncertain`` and never sent again; ``after_outcome`` publishes the stored ``EmailSent``
once. Always: the server got the mail at most once, and JetStream holds exactly one outcome.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy
from pymongo import AsyncMongoClient

from bench.sender import SENDER, login_desk, setup_events
from chaos.harness import Figure
from chaos.infra import Infra
from contracts.envelope import make_envelope
from contracts.outgoing import Recipient, SendEmailRequested
from mailwarden_runtime.bus import ensure_streams
from mailwarden_runtime.crypto import KeyRing
from mailwarden_runtime.mongo import database_name
from mailwarden_runtime.settings import ServiceSettings
from mailwarden_servers import NatsServer, SmtpServer, eventually
from mailwarden_servers.devstack import ServiceProcess, load_or_create_keys
from mailwarden_servers.ports import free_port

Point = Literal["before_smtp", "after_rcpt", "after_data", "after_outcome"]
POINTS: tuple[Point, ...] = ("before_smtp", "after_rcpt", "after_data", "after_outcome")
EXPECTED: dict[Point, str] = {
    "before_smtp": "EmailSent",
    "after_rcpt": "EmailSent",
    "after_data": "EmailSendUncertain",
    "after_outcome": "EmailSent",
}
USER, PASSWORD = "alice", "alice-pw"
LEASE_S = 12.0  # a dead sender's claim runs out this long after it was taken (or after DATA)


async def _stored_outcomes(nc: Client, mailbox_id: str) -> list[str]:
    """Every outcome JetStream keeps for the mailbox (a re-published duplicate would be here too)."""
    js = nc.jetstream()
    subject = f"mailwarden.send.*.{mailbox_id}"
    info = await js.stream_info("MW_SEND", subjects_filter=subject)
    count = sum((info.state.subjects or {}).values())
    if not count:
        return []
    sub = await js.subscribe(subject, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
    try:
        return [json.loads((await sub.next_msg(timeout=10)).data)["type"] for _ in range(count)]
    finally:
        await sub.unsubscribe()


class _HeldDesk:
    """The login desk, answering only once ``open`` is set (``asked`` counts the requests)."""

    def __init__(self, answer: Callable[[Msg], Awaitable[None]]) -> None:
        self.answer = answer
        self.open = asyncio.Event()
        self.asked = 0

    async def serve(self, msg: Msg) -> None:
        self.asked += 1
        if self.open.is_set():
            await self.answer(msg)


async def kill_once(work: Path, smtp: SmtpServer, mongo_uri: str, point: Point) -> dict[str, Any]:
    """One mail, one kill at ``point``, one restart; what the server got and what JetStream keeps."""
    await asyncio.to_thread(work.mkdir, parents=True, exist_ok=True)
    keys = load_or_create_keys(work / "keys.env")
    accounts = {USER: PASSWORD}
    mailbox_id = USER
    smtp.clear()
    with NatsServer(work / "nats") as nats_server:
        db = f"chaos_send_{work.name}".replace("-", "_")  # a fresh database per point and round
        env = {
            "MW_NATS_URL": nats_server.url,
            "MW_MONGODB_URI": mongo_uri,
            "MW_MONGODB_DB": db,
            **keys,
            "MW_SENDER_ALLOW_NETWORKS": "127.0.0.0/8",
            "MW_SENDER_CA_FILE": str(smtp.certs.ca),
            "MW_SENDER_LEASE_S": str(LEASE_S),
            "MW_SENDER_DATA_TIMEOUT_S": "5",
            "MW_SENDER_STEP_TIMEOUT_S": "3",
            "MW_SENDER_POLL_S": "0.05",
            "MW_SENDER_SWEEP_S": "0.5",
            "MW_SENDER_IDLE_KEEP_S": "60",
            "MW_LOG_LEVEL": "WARNING",
        }
        nc = await nats.connect(nats_server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
        desk = login_desk(accounts, smtp.port_starttls, KeyRing.parse(keys["MW_TRANSIT_KEYS"]))
        held = _HeldDesk(desk.answer)
        if point != "before_smtp":
            held.open.set()
        await nc.subscribe("mailwarden.rpc.mailbox-svc.login", cb=held.serve)
        await ensure_streams(nc, ServiceSettings(nats_url=nats_server.url))
        js = nc.jetstream()
        for event in setup_events(accounts, smtp.port_starttls, 4):
            envelope = make_envelope(event, "chaos")
            await js.publish(event.SUBJECT, envelope.to_bytes(), headers={"Nats-Msg-Id": str(envelope.id)})
        mongo: AsyncMongoClient[Any] = AsyncMongoClient(mongo_uri)
        sends = mongo[database_name(db, "sender-svc")]["sends"]

        async def request(key: str) -> None:
            req = SendEmailRequested(
                mailbox_id=mailbox_id, idempotency_key=key, to=[Recipient(address="ann@example.org")],
                subject=f"chaos {point}", text="once",
            )  # fmt: skip
            envelope = make_envelope(req, "chaos")
            await js.publish(req.SUBJECT, envelope.to_bytes(), headers={"Nats-Msg-Id": str(envelope.id)})

        async def status(key: str) -> str | None:
            doc = await sends.find_one({"key": key}, {"status": 1})
            return None if doc is None else str(doc["status"])

        first = ServiceProcess(work / "first", SENDER, free_port(), env)
        warm = 0
        try:
            await asyncio.to_thread(first.start)
            if point == "after_outcome":  # a warm connection and login: no NATS needed to send
                await request("warm")
                await eventually(lambda: smtp.message_count == 1, "the warm-up mail")
                await eventually(lambda: _is(status("warm"), "sent"), "the warm-up outcome")
                warm = 1
            gate = None
            if point == "after_rcpt":
                gate = smtp.hold_rcpt()
            elif point in ("after_data", "after_outcome"):
                gate = smtp.hold_data()
            await request("once")
            if point == "before_smtp":
                await eventually(lambda: held.asked > 0, "the login request")
            elif point == "after_rcpt":
                await eventually(lambda: smtp.auth_attempts >= 1, "the login")
                await asyncio.sleep(0.3)  # MAIL and RCPT on the wire, replies held
            else:
                await eventually(lambda: smtp.message_count == warm + 1, "the message at the server")
            if point == "after_outcome":
                await asyncio.to_thread(nats_server.kill)
                assert gate is not None
                gate.set()
                await eventually(lambda: _is(status("once"), "sent"), "the outcome stored")
            await asyncio.to_thread(first.kill)  # SIGKILL
            if gate is not None:
                smtp.rcpt_gate = smtp.data_gate = None
                gate.set()
            if point == "after_outcome":
                await asyncio.to_thread(nats_server.start)
                await eventually(lambda: nc.is_connected, "NATS back")
            held.open.set()
            second = ServiceProcess(work / "second", SENDER, free_port(), env)
            try:
                await asyncio.to_thread(second.start)

                async def outcome() -> bool:
                    return bool(await _stored_outcomes(nc, mailbox_id)) and (
                        await status("once") in ("sent", "uncertain", "failed")
                    )

                await eventually(outcome, "the outcome", LEASE_S + 40)
                await asyncio.sleep(1.5)  # a duplicate (mail or event) would come meanwhile
                stored = await _stored_outcomes(nc, mailbox_id)
            finally:
                await asyncio.to_thread(second.stop)
        finally:
            await asyncio.to_thread(first.kill)
            await mongo.close()
            await nc.close()
    return {"mails": smtp.message_count - warm, "outcomes": stored[warm:]}


async def _is(value: Awaitable[str | None], wanted: str) -> bool:
    return await value == wanted


async def kill_at_each_point(infra: Infra, work: Path, *, rounds: int = 1) -> Figure:
    """``rounds`` times each of :data:`POINTS`."""
    fig = Figure("A10 kill -9 sender-svc at each point of a send")
    with SmtpServer(infra.certs, {USER: PASSWORD}) as smtp:
        for r in range(rounds):
            for point in POINTS:
                got = await kill_once(work / f"{point}-{r}", smtp, infra.mongo_uri, point)
                fig.figures[f"{point}.mails"] = fig.figures.get(f"{point}.mails", 0) + got["mails"]
                expected = EXPECTED[point]
                fig.check(got["mails"] <= 1, f"{point}: the mail reached the server {got['mails']} times")
                fig.check(
                    got["outcomes"] == [expected], f"{point}: outcomes {got['outcomes']}, not [{expected}]"
                )
                if expected == "EmailSent":
                    fig.check(got["mails"] == 1, f"{point}: sent {got['mails']} times, not once")
    fig.figures["rounds"] = rounds
    return fig
