"""The whole system on real servers, for fault scenarios: in-process services and service processes.

Scenarios (``chaos/*.py``) and their fast versions in ``tests/reliability`` share this harness, so
the ``make test`` run and the ``make chaos`` run check the same things with different counts.
Services are configured only through the environment, as in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import nats
from fastapi import FastAPI
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from pymongo import AsyncMongoClient

from alert_svc.store import OUTBOX_COLLECTIONS as ALERT_OUTBOX
from contracts.subjects import STREAMS
from mailbox_svc.store import OUTBOX_COLLECTIONS as MAILBOX_OUTBOX
from mailbox_svc.testing import job_test_id
from mailwarden_runtime.auth import bearer_header
from mailwarden_runtime.auth.bootstrap import issue_token
from mailwarden_runtime.changes import POSITIONS, stored_position, unpublished
from mailwarden_runtime.crypto import KeyRing
from mailwarden_runtime.mailboxuses import MAILBOX_USES, MailboxUses
from mailwarden_servers import DovecotServer, NatsServer, TestCertificates, eventually, free_port
from mailwarden_servers.devstack import SERVICES, ServiceProcess, ServiceSpec
from profile_svc.store import OUTBOX_COLLECTIONS as PROFILE_OUTBOX

Doc = dict[str, Any]
SERVICE_NAMES = ("profile-svc", "mailbox-svc", "tester-svc", "alert-svc")
# fsync before every ack: what production runs (deploy/helm/nats-values.yaml, deploy/compose/nats.conf).
NATS_DURABLE_CONFIG = "jetstream { sync_interval: always }\n"

_ENV_LOCK = threading.Lock()


@contextlib.contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    """Set variables while an app reads its settings, then put the old values back."""
    with _ENV_LOCK:
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            yield
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


@dataclass
class Keys:
    """Fresh key rings for one system (never the dev keys: leaks must be real leaks)."""

    profile_credential: str = field(default_factory=lambda: KeyRing.generate_key_text("profile-cred1"))
    mailbox_credential: str = field(default_factory=lambda: KeyRing.generate_key_text("mailbox-cred1"))
    """Each storing service its own at-rest ring, as deployed."""
    transit: str = field(default_factory=lambda: KeyRing.generate_key_text("transit1"))
    webhook: str = field(default_factory=lambda: KeyRing.generate_key_text("hook1"))

    def env(self) -> dict[str, str]:
        return {
            "MW_PROFILE_CREDENTIAL_KEYS": self.profile_credential,
            "MW_MAILBOX_CREDENTIAL_KEYS": self.mailbox_credential,
            "MW_TRANSIT_KEYS": self.transit,
            "MW_ALERT_WEBHOOK_KEYS": self.webhook,
        }


@dataclass
class Figure:
    """One scenario's outcome: the printed figure and the problems that fail it."""

    scenario: str
    figures: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def check(self, condition: bool, problem: str) -> None:
        if not condition:
            self.problems.append(problem)

    def line(self) -> str:
        parts = ", ".join(f"{k}={v}" for k, v in self.figures.items())
        verdict = "PASS" if self.ok else "FAIL: " + "; ".join(self.problems[:10])
        return f"[{self.scenario}] {parts} -> {verdict}"


class InProcess:
    """One service app in this event loop, with an HTTP client on it."""

    def __init__(self, name: str, app: FastAPI, token: str) -> None:
        self.name = name
        self.app = app
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url=f"http://{name}",
            timeout=30,
            headers=bearer_header(token),
        )
        self._stack: AsyncExitStack | None = None

    async def start(self) -> None:
        self._stack = AsyncExitStack()
        await self._stack.enter_async_context(self.app.router.lifespan_context(self.app))

    async def stop(self) -> None:
        if self._stack is not None:
            stack, self._stack = self._stack, None
            await stack.aclose()
        await self.client.aclose()


def background_loops() -> dict[str, str]:
    """The in-process services' tasks running our code (loops, handlers, relays): where each waits.

    A loop that ended or a handler that hangs stalls its work without a log line; this says where
    (the chain of awaits of each task, from its coroutine down to what it waits on).
    """
    found: dict[str, str] = {}
    for task in asyncio.all_tasks():
        chain: list[str] = []
        awaited: Any = task.get_coro()
        while awaited is not None and len(chain) < 40:
            frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "ag_frame", None)
            frame = frame or getattr(awaited, "gi_frame", None)
            if frame is None:
                chain.append(type(awaited).__name__)
                break
            chain.append(f"{frame.f_code.co_name}:{frame.f_lineno}")
            awaited = (
                getattr(awaited, "cr_await", None)
                or getattr(awaited, "ag_await", None)
                or getattr(awaited, "gi_yieldfrom", None)
            )
        code = getattr(task.get_coro(), "cr_code", None)
        if code is not None and "/src/" in code.co_filename:  # services' and libs' code, not servers'
            found[task.get_name()] = " > ".join(chain[-8:])
    return found


def build_app(name: str, env: dict[str, str]) -> FastAPI:
    """``<pkg>.app:create_app()`` with ``env`` in the environment while the settings are read."""
    with environment(env):
        if name == "profile-svc":
            from profile_svc.app import create_app as profile_app

            return profile_app()
        if name == "mailbox-svc":
            from mailbox_svc.app import create_app as mailbox_app

            return mailbox_app()
        if name == "tester-svc":
            from tester_svc.app import create_app as tester_app

            return tester_app()
        if name == "alert-svc":
            from alert_svc.app import create_app as alert_app

            return alert_app()
    raise ValueError(name)


def spec_of(name: str) -> ServiceSpec:
    return next(s for s in SERVICES if s.name == name)


@dataclass
class MailTarget:
    """Where the profile points: IMAPS on Dovecot, SMTP with STARTTLS, both with the test CA."""

    host: str
    imaps_port: int
    smtp_port: int
    user: str
    password: str


class System:
    """Services on one NATS and one MongoDB-wire server; some in-process, some as processes."""

    def __init__(
        self,
        workdir: Path,
        nats_url: str,
        mongo_uri: str,
        certs: TestCertificates,
        *,
        in_process: tuple[str, ...] = SERVICE_NAMES,
        tester_processes: int = 0,
        processes: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        keys: Keys | None = None,
        service_env: dict[str, dict[str, str]] | None = None,
        token_nats_url: str | None = None,
    ) -> None:
        self.workdir = workdir
        self.token_nats_url = token_nats_url or nats_url  # a NATS user that may write the token bucket
        self.token = ""
        self.nats_url = nats_url
        self.mongo_uri = mongo_uri
        self.certs = certs
        self.keys = keys or Keys()
        self.db_prefix = f"t_{uuid.uuid4().hex[:12]}"
        self.env = {
            "MW_NATS_URL": nats_url,
            "MW_MONGODB_URI": mongo_uri,
            "MW_MONGODB_DB": self.db_prefix,
            "MW_LOG_SETUP": "false",
            "MW_TESTER_ALLOW_NETWORKS": "127.0.0.0/8",
            "MW_TESTER_CA_FILE": str(certs.ca),
            "MW_TESTER_STEP_TIMEOUT_S": "10",
            "MW_SCHEDULER_POLL_S": "0.5",
            # A transient failure is retried after a second, not five minutes.
            "MW_RETRY_INTERVAL_S": "1",
            "MW_RETRY_JITTER": "0",
            "MW_ALERT_CHANNEL_POLL_S": "0.5",
            **self.keys.env(),
            **(env or {}),
        }
        self.service_env = service_env or {}
        self.in_process_names = in_process
        self.process_names = processes
        self.tester_count = tester_processes
        self.services: dict[str, InProcess] = {}
        self.procs: dict[str, ServiceProcess] = {}
        self.mongo: AsyncMongoClient[Doc] = AsyncMongoClient(mongo_uri, tz_aware=True)
        self.nc: Any = None
        self._clients: dict[str, httpx.AsyncClient] = {}

    # ---- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> System:
        async def quiet(exc: Exception) -> None:  # scenarios kill NATS on purpose: no traceback per retry
            del exc

        self.nc = await nats.connect(
            self.nats_url, max_reconnect_attempts=-1, reconnect_time_wait=0.5, error_cb=quiet
        )
        self.token = await issue_token(self.token_nats_url, "chaos-admin")
        for name in self.in_process_names:
            svc = InProcess(name, build_app(name, {**self.env, **self.service_env.get(name, {})}), self.token)
            await svc.start()
            self.services[name] = svc
        for name in self.process_names:
            self.procs[name] = self._process(name, name)
        for n in range(self.tester_count):
            self.procs[f"tester-{n}"] = self._process("tester-svc", f"tester-{n}")
        await asyncio.gather(*(asyncio.to_thread(p.start) for p in self.procs.values()))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for client in self._clients.values():
            await client.aclose()
        await asyncio.gather(*(asyncio.to_thread(p.stop) for p in self.procs.values()))
        for svc in reversed(list(self.services.values())):
            with contextlib.suppress(Exception):
                await svc.stop()
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.close()
        await self.mongo.close()

    async def restart(self, name: str, env: dict[str, str]) -> None:
        """Stop an in-process service and start it again with ``env`` added (e.g. new keys)."""
        await self.services[name].stop()
        self.service_env[name] = {**self.service_env.get(name, {}), **env}
        svc = InProcess(name, build_app(name, {**self.env, **self.service_env[name]}), self.token)
        await svc.start()
        self.services[name] = svc

    def _process(self, service: str, instance: str) -> ServiceProcess:
        env = {
            **self.env,
            **self.service_env.get(service, {}),
            "MW_LOG_SETUP": "true",
            "MW_INSTANCE": instance,
            "MW_LOG_LEVEL": "INFO",
        }
        proc = ServiceProcess(self.workdir / "logs", spec_of(service), free_port(), env)
        proc.name = instance
        proc.log_path = proc.workdir / f"{instance}.log"
        return proc

    def http(self, name: str) -> httpx.AsyncClient:
        """A client on the service, in-process or over HTTP to its process."""
        if name in self.services:
            return self.services[name].client
        if name not in self._clients:
            self._clients[name] = httpx.AsyncClient(
                base_url=self.procs[name].url, timeout=30, headers=bearer_header(self.token)
            )
        return self._clients[name]

    def db(self, service: str) -> Any:
        return self.mongo[f"{self.db_prefix}_{service.replace('-', '_')}"]

    # ---- set-up through the APIs ------------------------------------------------------------

    async def allow_ports(self, ports: list[int]) -> None:
        profiles = self.http("profile-svc")
        current = (await profiles.get("/settings")).json()
        body = {k: v for k, v in current.items() if k in _SETTINGS_FIELDS}
        body |= {"port_preset": "custom", "allowed_ports": sorted(set(ports))}
        resp = await profiles.put("/settings", json=body)
        assert resp.status_code == 200, resp.text
        version = resp.json().get("version")

        async def known() -> bool:
            docs = [
                await self.db("mailbox-svc").settings.find_one({"_id": "org"}),
                await self.db("alert-svc").settings.find_one({"_id": "org"}),
            ]
            return all(d is not None and d.get("version", 0) >= (version or 0) for d in docs)

        await eventually(known, "org settings in mailbox-svc and alert-svc", 30)

    async def create_profile(
        self, target: MailTarget, tag: str, advanced: dict[str, Any] | None = None
    ) -> str:
        profiles = self.http("profile-svc")
        body: dict[str, Any] = {
            "name": f"profile {tag}",
            "owner": owner("user", f"padmin{tag}"),
            "incoming_protocol": "imap",
            "incoming": {"host": target.host, "port": target.imaps_port, "tls": "implicit"},
            "use_same_settings_for_outgoing": False,
            "outgoing": {"host": target.host, "port": target.smtp_port, "tls": "starttls"},
        }
        if advanced:
            body["advanced"] = advanced
        resp = await profiles.post("/profiles", json=body)
        assert resp.status_code == 201, resp.text
        profile_id: str = resp.json()["profile_id"]

        async def known() -> bool:
            return await self.db("mailbox-svc").profiles.find_one({"_id": profile_id}) is not None

        await eventually(known, "the profile in mailbox-svc", 30)
        return profile_id

    async def create_mailboxes(
        self, profile_id: str, n: int, tag: str, user: str, password: str
    ) -> list[str]:
        """``n`` approved mailboxes of one profile, created in batches of up to 1,000."""
        mailboxes = self.http("mailbox-svc")
        ids = [f"m{tag}-{i:05d}" for i in range(n)]
        for start in range(0, n, 1000):
            chunk = ids[start : start + 1000]
            body = {
                "mailboxes": [
                    {
                        "mailbox_id": mid,
                        "email": f"{mid}@mail.test",
                        "owner": owner("user", f"o{mid}"),
                        "profile_id": profile_id,
                        "credentials": {"username": user, "password": password},
                    }
                    for mid in chunk
                ]
            }
            resp = await mailboxes.post("/mailboxes/batch", json=body)
            assert resp.status_code == 201, resp.text
            resp = await mailboxes.post("/mailboxes/approve", json={"mailbox_ids": chunk})
            assert resp.status_code == 200, resp.text
        return ids

    async def start_job(self, profile_id: str) -> str:
        resp = await self.http("mailbox-svc").post("/jobs", json={"profile_id": profile_id})
        assert resp.status_code == 202, resp.text
        job_id: str = resp.json()["job_id"]
        return job_id

    async def tested_count(self, profile_id: str) -> int:
        """Mailboxes of the profile whose test result is applied (nothing pending or scheduled)."""
        return int(
            await self.db("mailbox-svc").mailboxes.count_documents(
                {
                    "profile_id": profile_id,
                    "pending_test_id": None,
                    "last_test_completed_at": {"$ne": None},
                    "next_retry_at": None,
                }
            )
        )

    async def wait_tested(self, profile_id: str, n: int, within: float) -> None:
        async def done() -> bool:
            return await self.tested_count(profile_id) >= n

        try:
            await eventually(done, f"{n} mailboxes tested", within)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; {await self.stuck(profile_id)}") from None

    async def stuck(self, profile_id: str) -> str:
        """Why mailboxes are not done: their states, and what the consumers still hold."""
        states: Counter[str] = Counter()
        async for d in self.db("mailbox-svc").mailboxes.find({"profile_id": profile_id}):
            state = (
                "done"
                if d.get("pending_test_id") is None
                and d.get("last_test_completed_at")
                and not d.get("next_retry_at")
                else f"pending={bool(d.get('pending_test_id'))},retry={bool(d.get('next_retry_at'))},"
                f"in={d.get('incoming_status')},out={d.get('outgoing_status')},err={(d.get('last_error') or {}).get('code')}"
            )
            states[state] += 1
        jobs = []
        mdb = self.db("mailbox-svc")
        async for j in mdb.jobs.find({"profile_id": profile_id}):
            # its expansion is its batch records (mailbox_svc.jobexpansion) over the document
            records = await mdb.job_batches.find({"job_id": j["_id"]}).to_list(None)
            jobs.append(
                {
                    "state": j.get("state"),
                    "total": j.get("total"),
                    "requested": int(j.get("requested") or 0) + sum(int(r["requested"]) for r in records),
                    "expanded": bool(j.get("expanded")) or any(r.get("expanded") for r in records),
                }
            )
        backlog = {k: v for k, v in (await self.consumer_backlog()).items() if v != (0, 0)}
        trail = await self._trail_of_pending(profile_id)
        loops = background_loops()
        return (
            f"mailboxes {dict(states)}; jobs {jobs}; consumer backlog {backlog}; trail {trail}; loops {loops}"
        )

    async def _trail_of_pending(self, profile_id: str, most: int = 3) -> dict[str, list[str]]:
        """For a few mailboxes still waiting on a test: which events of that test reached the bus.

        A test is pending on the mailbox, or is its running job's (jobs do not record their tests
        on the mailboxes; the test id is derived from job and mailbox).
        """
        db = self.db("mailbox-svc")
        waiting = [
            str(d["pending_test_id"])
            async for d in db.mailboxes.find(
                {"profile_id": profile_id, "pending_test_id": {"$ne": None}}, {"pending_test_id": 1}
            ).limit(most)
        ]
        async for job in db.jobs.find({"profile_id": profile_id, "state": "running"}, {"_id": 1}):
            untested = {"profile_id": profile_id, "pending_test_id": None, "last_test_completed_at": None}
            async for d in db.mailboxes.find(untested, {"_id": 1}).limit(most):
                waiting.append(job_test_id(str(job["_id"]), str(d["_id"])))
        if not waiting:
            return {}
        trail: dict[str, list[str]] = {test_id: [] for test_id in waiting}
        for stream in ("MW_TESTS", "MW_CONFIG", "MW_DLQ"):
            for subject, body in await self.stream_messages(stream):
                for test_id in waiting:
                    if test_id.encode() in body:
                        trail[test_id].append(subject)
        return trail

    # ---- audits ---------------------------------------------------------------------------------

    async def stream_messages(self, stream: str, subject: str | None = None) -> list[tuple[str, bytes]]:
        """Every message of a stream (or of one subject in it): (subject, body)."""
        return [(m.subject, m.data) for m in await self.stream_msgs(stream, subject)]

    async def publish_lags(self, stream: str, subject: str) -> list[tuple[datetime, float]]:
        """Per event: when it was made (``occurred_at``, just before its write) and how many seconds
        later the stream stored it."""
        lags = []
        for m in await self.stream_msgs(stream, subject):
            occurred = datetime.fromisoformat(json.loads(m.data)["occurred_at"])
            lags.append((occurred, (m.metadata.timestamp.astimezone(UTC) - occurred).total_seconds()))
        return lags

    async def stream_msgs(self, stream: str, subject: str | None = None) -> list[Msg]:
        """Every message of a stream (or of one subject in it), with its metadata."""
        js = self.nc.jetstream()
        info = await js.stream_info(stream)
        if info.state.messages == 0:
            return []
        psub = await js.pull_subscribe(
            subject or ">",
            stream=stream,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE, inactive_threshold=30
            ),
        )
        out: list[Msg] = []
        try:
            while True:
                try:
                    msgs = await psub.fetch(512, timeout=2.0)
                except (nats.errors.TimeoutError, TimeoutError):
                    # A slow fetch is not the end: stop only when the server has nothing left.
                    if (await psub.consumer_info()).num_pending == 0:
                        break
                    continue
                out.extend(msgs)
                if msgs and msgs[-1].metadata.num_pending == 0:
                    break
        finally:
            with contextlib.suppress(Exception):
                await psub.unsubscribe()
        return out

    async def consumer_backlog(self) -> dict[str, tuple[int, int]]:
        """(num_pending, num_ack_pending) of every durable consumer on our streams."""
        js = self.nc.jetstream()
        out: dict[str, tuple[int, int]] = {}
        for spec in STREAMS:
            for info in await js.consumers_info(spec.name):
                if info.config.durable_name:
                    out[f"{spec.name}/{info.name}"] = (info.num_pending, info.num_ack_pending)
        return out

    async def relays_behind(self) -> dict[str, int]:
        """Per running service with an event relay: its writes whose events may not be published yet."""
        running = {*self.in_process_names, *self.process_names}
        return {
            name: await unpublished(self.db(name), collections, f"{name}-outbox")
            for name, collections in RELAYED.items()
            if name in running
        }

    async def wait_quiet(self, within: float = 60.0) -> dict[str, tuple[int, int]]:
        """Wait until every event written is published and handled; returns the consumers' last view.

        Consumers with nothing pending say nothing about events still to come: a service's relay
        publishes its writes' events after the write (up to a poll interval later, longer while it
        reconnects after a database outage). So: every relay caught up, every durable consumer
        with nothing pending or unacked, and the relays still caught up after that (a handler's
        writes happen before its ack, their events may follow it).
        """
        last: dict[str, tuple[int, int]] = {}
        behind: dict[str, int] = {}

        async def quiet() -> bool:
            nonlocal last, behind
            behind = await self.relays_behind()
            if any(behind.values()):
                return False
            last = await self.consumer_backlog()
            if not all(p == 0 and a == 0 for p, a in last.values()):
                return False
            behind = await self.relays_behind()
            return not any(behind.values())

        try:
            await eventually(quiet, "relays to publish and consumers to drain", within)
        except AssertionError:
            print(f"not quiet: relays {behind}, consumers {last}; tasks {background_loops()}", flush=True)
            last = {**last, **{f"{name} relay": (n, 0) for name, n in behind.items() if n}}
        return last

    async def redeliveries(self, durable: str, stream: str, subject: str) -> int:
        """Deliveries beyond the first: the consumer sequence counts every delivery."""
        info = await self.nc.jetstream().consumer_info(stream, durable)
        messages = len(await self.stream_messages(stream, subject))
        return int(info.delivered.consumer_seq) - messages

    async def _why_no_alert(self, missing: list[str], most: int = 3) -> dict[str, object]:
        """For a few mailboxes without an alert: their status events, dead letters, alert-svc's records."""
        out: dict[str, object] = {"relays_behind": await self.relays_behind()}
        statuses = await self.stream_messages("MW_CONFIG", "mailwarden.mailbox.status_changed")
        dead = await self.stream_messages("MW_DLQ")
        adb = self.db("alert-svc")
        for mid in missing[:most]:
            events = []
            for _, body in statuses:
                doc = json.loads(body)
                if doc["data"]["mailbox"]["mailbox_id"] == mid:
                    d = doc["data"]
                    keep = ("incoming_status", "outgoing_status", "enabled_incoming", "enabled_outgoing")
                    events.append({"id": doc["id"], "at": doc["occurred_at"], **{k: d.get(k) for k in keep}})
            out[mid] = {
                "events": events,
                "dead_letters": [s for s, body in dead if mid.encode() in _dead_body(body)],
                "alert_svc_mailbox": (await MailboxUses(adb[MAILBOX_USES]).newest([mid])).get(mid),
                "any_alert": await adb.alerts.count_documents({"mailbox_id": mid}),
            }
        return out

    async def status_changes_per_test(self) -> Counter[tuple[str, str]]:
        """MailboxStatusChanged messages per (mailbox id, test id)."""
        counts: Counter[tuple[str, str]] = Counter()
        for _, body in await self.stream_messages("MW_CONFIG", "mailwarden.mailbox.status_changed"):
            doc = json.loads(body)
            if doc["producer"] == "mailbox-svc":
                counts[(doc["data"]["mailbox"]["mailbox_id"], str(doc["data"].get("test_id")))] += 1
        return counts

    async def delivery_audit(self, fig: Figure, profile_id: str, ids: list[str]) -> None:
        """The checks every delivery scenario shares: one result, one status change, one alert each."""
        mdb = self.db("mailbox-svc")
        tested = await self.tested_count(profile_id)
        fig.figures["completed"] = f"{tested}/{len(ids)}"
        fig.check(tested == len(ids), f"only {tested} of {len(ids)} tests completed")
        ok = await mdb.mailboxes.count_documents(
            {"profile_id": profile_id, "incoming_status": "success", "outgoing_status": "success"}
        )
        fig.figures["succeeded"] = ok
        fig.check(ok == len(ids), f"{len(ids) - ok} mailboxes did not end in success")
        # A transient failure (e.g. a test timed out while queued) is retried: that is a new test
        # with its own id, not a duplicate. Duplicates are two effects of one test id.
        runs: Counter[str] = Counter()
        causes: Counter[str] = Counter()
        found = mdb.test_run_batches.aggregate(
            [
                {"$match": {"runs.mailbox_id": {"$in": ids}}},
                {"$unwind": "$runs"},
                {"$match": {"runs.mailbox_id": {"$in": ids}}},
                {"$replaceRoot": {"newRoot": "$runs"}},
            ]
        )
        async for run in await found:
            runs[run["mailbox_id"]] += 1
            if run.get("outcome") != "success":
                causes[str(run.get("outcome"))] += 1
        fig.figures["retried_mailboxes"] = sum(1 for c in runs.values() if c > 1)
        if causes:
            fig.figures["retry_causes"] = dict(causes)
        changes = await self.status_changes_per_test()
        mine = {k: v for k, v in changes.items() if k[0] in set(ids)}
        dup_flips = sum(c - 1 for c in mine.values() if c > 1)
        fig.figures["duplicate_status_changes"] = dup_flips
        fig.check(dup_flips == 0, f"{dup_flips} duplicate MailboxStatusChanged (same test id)")
        per_mailbox = Counter(m for m, _ in mine)
        unmatched = sum(1 for m in ids if per_mailbox[m] != runs[m])
        fig.figures["status_changes_without_one_run"] = unmatched
        fig.check(unmatched == 0, f"{unmatched} mailboxes whose status changes do not match their test runs")
        adb = self.db("alert-svc")
        alerted: set[str] = set()
        double_counted = 0
        async for alert in adb.alerts.find(
            {"mailbox_id": {"$in": ids}}, {"mailbox_id": 1, "count": 1, "occurrences": 1}
        ):
            alerted.add(alert["mailbox_id"])
            seen = alert.get("occurrences") or []
            double_counted += int(
                len(seen) != len(set(seen)) or (len(seen) < 20 and alert.get("count") != len(seen))
            )
        fig.figures["duplicate_alerts"] = double_counted
        fig.check(double_counted == 0, f"{double_counted} alerts counted one test twice")
        fig.check(len(alerted) == len(ids), f"{len(ids) - len(alerted)} mailboxes without an alert")
        if len(alerted) != len(ids):
            print(f"without an alert: {await self._why_no_alert([m for m in ids if m not in alerted])}")
        # The relay publishes asynchronously and stores its position once per checkpoint interval:
        # writes are "left" only when they stay unpublished, not while it is catching up.
        started = asyncio.get_running_loop().time()
        pending = await unpublished(mdb, ("mailboxes", "jobs"), "mailbox-svc-outbox")
        while pending and asyncio.get_running_loop().time() - started < RELAY_SETTLE_S:
            await asyncio.sleep(0.5)
            pending = await unpublished(mdb, ("mailboxes", "jobs"), "mailbox-svc-outbox")
        fig.figures["relay_settled_s"] = round(asyncio.get_running_loop().time() - started, 1)
        fig.figures["outbox_left"] = pending
        fig.check(pending == 0, f"{pending} mailboxes still have unpublished events")
        # Which relay published mailbox-svc's events: the change-stream relay keeps its positions in
        # `event_relay` (each an inserted document, the newest read on restart); the outbox relay none.
        relay = "mailbox-svc-outbox"
        fig.figures["event_relay"] = "change_stream" if await stored_position(mdb, relay) else "outbox"
        fig.figures["relay_positions_kept"] = await mdb[POSITIONS].count_documents(
            {"_id": {"$gt": f"{relay}/", "$lt": f"{relay}0"}}
        )


# The collections whose writes carry events, per service with an event relay.
RELAYED = {
    "profile-svc": PROFILE_OUTBOX,
    "mailbox-svc": MAILBOX_OUTBOX,
    "alert-svc": ALERT_OUTBOX,
}

# How long the audit lets the event relay catch up (a few checkpoint intervals under load).
RELAY_SETTLE_S = 20.0

_SETTINGS_FIELDS = {
    "default_profile_id", "incoming_delivery", "outgoing_delivery", "act_delivery", "approved_users_only",
    "approved_queues_only", "alert_levels", "notify_mailbox_owner", "port_preset", "allowed_ports",
}  # fmt: skip


def _dead_body(body: bytes) -> bytes:
    """The message a dead letter keeps (base64 in its data)."""
    import base64

    return base64.b64decode(json.loads(body)["data"].get("body_b64") or "")


def owner(kind: str, oid: str) -> dict[str, str]:
    return {"kind": kind, "id": oid, "name": f"{kind} {oid}", "email": f"{oid}@example.org"}


@contextlib.asynccontextmanager
async def private_nats(workdir: Path, config_text: str = NATS_DURABLE_CONFIG) -> AsyncIterator[NatsServer]:
    """A nats-server of our own (file storage, fsync before ack): no leftover streams or consumers."""
    server = NatsServer(workdir, config_text=config_text)
    await asyncio.to_thread(server.start)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop)


def mail_target(dovecot: DovecotServer, smtp_port: int, user: str, password: str) -> MailTarget:
    return MailTarget("127.0.0.1", dovecot.imaps_port, smtp_port, user, password)
