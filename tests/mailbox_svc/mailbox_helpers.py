"""Helpers for mailbox-svc tests: the app in-process on a private NATS and its own database.

The test plays the other services through the bus: it publishes ProfileCreated and
EmailSettingsChanged envelopes, and acts as the tester by consuming TestRequested and publishing
TestCompleted envelopes.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import nats
import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy
from pydantic import SecretStr
from pymongo import AsyncMongoClient
from pymongo.errors import AutoReconnect

from contracts.envelope import Envelope, make_envelope, parse_envelope
from contracts.errors import ErrorCode
from contracts.events import (
    AdvancedOptions,
    EmailSettingsChanged,
    Event,
    ProfileCreated,
    ProfileSnapshot,
    SealedCredentials,
    SettingsSnapshot,
    TestCompleted,
    TestRequested,
)
from contracts.models import (
    CredentialSource,
    Direction,
    DirectionResult,
    Endpoint,
    IncomingProtocol,
    Owner,
    OwnerKind,
    TestError,
    TestStatus,
    TlsMode,
)
from contracts.subjects import STREAMS
from mailbox_svc.app import create_app
from mailbox_svc.config import Settings
from mailwarden_runtime.auth import bearer_header
from mailwarden_runtime.auth.bootstrap import issue_token
from mailwarden_runtime.changes import unpublished
from mailwarden_runtime.crypto import KeyRing
from mailwarden_runtime.mongo import database_name
from mailwarden_runtime.sealing import open_for_test
from mailwarden_servers import eventually

PROFILE_OWNER = Owner(kind=OwnerKind.USER, id="admin1", name="Admin", email="admin@example.com")
Outcome = str | ErrorCode  # "success" or an error code


def key_text(kid: str) -> str:
    return KeyRing.generate_key_text(kid)


def profile_snapshot(
    profile_id: str = "prof1",
    *,
    source: CredentialSource = CredentialSource.MAILBOX,
    sealed: SealedCredentials | None = None,
    version: int = 1,
    max_connections: int = 3,
) -> ProfileSnapshot:
    return ProfileSnapshot(
        profile_id=profile_id,
        name=f"IMAP {profile_id}",
        owner=PROFILE_OWNER,
        incoming_protocol=IncomingProtocol.IMAP,
        incoming=Endpoint(host="imap.example.com", port=993, tls=TlsMode.IMPLICIT),
        outgoing=Endpoint(host="smtp.example.com", port=465, tls=TlsMode.IMPLICIT),
        credential_source=source,
        sealed_credentials=sealed,
        advanced=AdvancedOptions(
            verify_tls=False, connect_timeout_s=7.5, max_concurrent_connections=max_connections
        ),
        version=version,
        updated_at=datetime.now(UTC),
    )


def direction_result(direction: Direction, outcome: Outcome) -> DirectionResult:
    now = datetime.now(UTC)
    protocol = "imap" if direction is Direction.INCOMING else "smtp"
    if outcome == "success":
        return DirectionResult(
            direction=direction, protocol=protocol, status=TestStatus.SUCCESS, started_at=now, duration_ms=3.0
        )
    error = TestError.of(ErrorCode(outcome), "auth")
    return DirectionResult(
        direction=direction,
        protocol=protocol,
        status=TestStatus.FAILURE,
        error=error,
        started_at=now,
        duration_ms=3.0,
    )


def completed_for(
    req: TestRequested, incoming: Outcome = "success", outgoing: Outcome = "success"
) -> TestCompleted:
    now = datetime.now(UTC)
    results = {
        d.value: direction_result(d, incoming if d is Direction.INCOMING else outgoing)
        for d in req.directions
    }
    return TestCompleted(
        test_id=req.test_id,
        mailbox=req.mailbox,
        attempt=req.attempt,
        job_id=req.job_id,
        incoming=results.get("incoming"),
        outgoing=results.get("outgoing"),
        started_at=now,
        finished_at=now,
        requested_at=req.requested_at,
        tester="fake-tester",
    )


class Harness:
    """The app under test plus a NATS client playing profile-svc and tester-svc."""

    def __init__(
        self, app: Any, client: httpx.AsyncClient, nc: Any, db: Any, settings: Settings, token: str = ""
    ) -> None:
        self.app = app
        self.token = token
        self.http = client
        self.nc = nc
        self.js = nc.jetstream()
        self.db = db
        self.settings = settings
        self._tester: Any = None
        self.settings_version = 0
        self.last_seq = 0
        self.known_profiles: dict[str, ProfileSnapshot] = {}

    async def answer_profile_rpc(self) -> None:
        """Play profile-svc's ``get`` over request-reply, for the profiles this test created."""

        async def on_get(msg: Any) -> None:
            profile_id = json.loads(msg.data).get("profile_id", "")
            snap = self.known_profiles.get(profile_id)
            if snap is None:
                reply = {"ok": False, "status": 404, "detail": "no such profile", "errors": []}
            else:
                reply = {"ok": True, "result": snap.model_dump(mode="json", exclude={"sealed_credentials"})}
            await msg.respond(json.dumps(reply).encode())

        await self.nc.subscribe("mailwarden.rpc.profile-svc.get", cb=on_get)

    async def publish(self, event: Event, event_id: uuid.UUID | None = None) -> Envelope[Any]:
        env = make_envelope(event, "test", event_id=event_id)
        ack = await self.js.publish(event.SUBJECT, env.to_bytes(), headers={"Nats-Msg-Id": str(env.id)})
        self.last_seq = ack.seq
        return env

    async def profile(self, snapshot: ProfileSnapshot | None = None) -> ProfileSnapshot:
        snapshot = snapshot or profile_snapshot()
        self.known_profiles[snapshot.profile_id] = snapshot
        await self.publish(ProfileCreated(profile=snapshot))

        async def stored() -> bool:
            doc = await self.db.profiles.find_one({"_id": snapshot.profile_id})
            return bool(doc and doc.get("version") == snapshot.version)

        await eventually(stored, what="profile read model")
        return snapshot

    async def org_settings(self, **fields: Any) -> SettingsSnapshot:
        self.settings_version += 1
        snap = SettingsSnapshot(version=self.settings_version, updated_at=datetime.now(UTC), **fields)
        await self.publish(EmailSettingsChanged(settings=snap))

        async def stored() -> bool:
            doc = await self.db.settings.find_one({"_id": "org"})
            return bool(doc and doc.get("version") == snap.version)

        await eventually(stored, what="settings read model")
        return snap

    async def test_requests(self, n: int, timeout: float = 15.0) -> list[TestRequested]:
        """Take the next ``n`` TestRequested from the bus, as the tester would."""
        if self._tester is None:
            self._tester = await self.js.pull_subscribe(
                "mailwarden.test.requested",
                durable="fake-tester",
                config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, ack_wait=60),
            )
        out: list[TestRequested] = []
        deadline = asyncio.get_running_loop().time() + timeout
        while len(out) < n:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise AssertionError(f"got {len(out)} of {n} TestRequested")
            try:
                msgs = await self._tester.fetch(min(n - len(out), 256), timeout=min(left, 1.0))
            except (nats.errors.TimeoutError, TimeoutError):
                continue
            for msg in msgs:
                out.append(parse_envelope(msg.data, TestRequested).data)
                await msg.ack()
        return out

    async def no_more_requests(self, wait: float = 0.5) -> bool:
        try:
            await self.test_requests(1, timeout=wait)
        except AssertionError:
            return True
        return False

    async def complete(
        self, req: TestRequested, incoming: Outcome = "success", outgoing: Outcome = "success"
    ) -> TestCompleted:
        done = completed_for(req, incoming, outgoing)
        await self.publish(done)
        return done

    async def mailbox(self, mailbox_id: str) -> dict[str, Any]:
        r = await self.http.get(f"/mailboxes/{mailbox_id}")
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def wait_mailbox(
        self, mailbox_id: str, check: Callable[[dict[str, Any]], bool], timeout: float = 15.0
    ) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            mb = await self.mailbox(mailbox_id)
            return mb if check(mb) else None

        result: dict[str, Any] = await eventually(probe, f"mailbox {mailbox_id}", timeout)
        return result

    async def settled(self) -> None:
        """Wait until the outbox relay has published every event written so far."""

        async def empty() -> bool:
            return await unpublished(self.db, ("mailboxes", "jobs"), "mailbox-svc-outbox") == 0

        await eventually(empty, what="outbox drained")

    async def stream_messages(self, subject_prefix: str = "") -> list[dict[str, Any]]:
        """Every message stored in every stream (optionally under a subject prefix), decoded.

        Waits for the outbox first: an event committed with a state change is published just after it.
        """
        await self.settled()
        out = []
        for spec in STREAMS:
            info = await self.js.stream_info(spec.name)
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                try:
                    msg = await self.js.get_msg(spec.name, seq)
                except Exception:
                    continue
                if msg.subject.startswith(subject_prefix):
                    out.append(
                        {
                            "subject": msg.subject,
                            "body": (msg.data or b"").decode(),
                            "data": json.loads(msg.data or b"{}"),
                        }
                    )
        return out

    async def rpc(self, op: str, body: dict[str, Any]) -> dict[str, Any]:
        msg = await self.nc.request(
            f"mailwarden.rpc.mailbox-svc.{op}",
            json.dumps(body).encode(),
            timeout=10,
            headers=bearer_header(self.token),
        )
        return dict(json.loads(msg.data))


MakeHarness = Callable[..., Any]


def harness_factory(private_nats: str, mongo_uri: str) -> MakeHarness:
    """``async with make_harness(**settings) as h``: one app on a fresh database; same db on re-entry."""
    db_name = "t_" + uuid.uuid4().hex[:12]
    ring_text = f"{key_text('k1')}"
    transit_text = f"{key_text('t1')}"

    @asynccontextmanager
    async def make(**overrides: Any) -> AsyncIterator[Harness]:
        values: dict[str, Any] = {
            "nats_url": private_nats,
            "mongodb_uri": mongo_uri,
            "mongodb_db": db_name,
            "dev_mode": True,
            "log_setup": False,
            "credential_keys": SecretStr(ring_text),
            "transit_keys": SecretStr(transit_text),
            "scheduler_poll_s": 0.2,
            "dedupe_window_s": 120.0,
        }
        values.update(overrides)
        settings = Settings(**values)
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            token = await issue_token(private_nats)
            headers = bearer_header(token)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://svc", headers=headers
            ) as client:
                nc = await nats.connect(private_nats)
                mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri, tz_aware=True)
                try:
                    harness = Harness(
                        app, client, nc, mongo[database_name(db_name, "mailbox-svc")], settings, token
                    )
                    await harness.answer_profile_rpc()
                    yield harness
                finally:
                    await nc.close()
                    await mongo.close()

    return make


def owner(kind: OwnerKind = OwnerKind.USER, oid: str = "u1") -> dict[str, Any]:
    return {"kind": kind.value, "id": oid, "name": f"Owner {oid}", "email": f"{oid}@example.com"}


def mailbox_body(
    n: int = 1, *, profile_id: str | None = "prof1", password: str = "pw-secret-1", **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "email": f"user{n}@example.com",
        "owner": owner(oid=f"u{n}"),
        "profile_id": profile_id,
        "credentials": {"username": f"user{n}", "password": password},
    }
    body.update(extra)
    return body


def open_sealed(transit: KeyRing, req: TestRequested, direction: str) -> dict[str, Any]:
    """A login of a TestRequested, opened as the tester does (bound to the test and its server)."""
    assert req.credentials is not None
    sealed = getattr(req.credentials, direction)
    endpoint = req.target.incoming if direction == "incoming" else req.target.outgoing
    raw = open_for_test(
        transit, sealed, test_id=req.test_id, direction=direction, host=endpoint.host, port=endpoint.port
    )
    doc: dict[str, Any] = json.loads(raw)
    assert doc.pop("not_after") > req.requested_at.timestamp()
    return doc


async def result_stored_but_never_applied(h: Any, completed: TestCompleted) -> None:
    """Run the result handler while every mailbox update fails (a database outage outlasting its
    retries): the run is stored, the mailbox never learns of it, and no redelivery comes."""
    handlers, mailboxes = h.app.state.handlers, h.app.state.stores.mailboxes

    async def database_down(*args: Any, **kwargs: Any) -> bool:
        raise AutoReconnect("connection refused")

    with pytest.MonkeyPatch.context() as down:
        down.setattr(mailboxes, "update_if", database_down)
        with pytest.raises(AutoReconnect):
            await handlers.test_completed(make_envelope(completed, "tester-svc"))
