"""mailwarden itself as processes for the end-to-end rows: nats-server, SecantusDB, four services.

Started like `make up` does (``python -m uvicorn --factory <pkg>.app:create_app``, one process per
service, real keys, SecantusDB run as its own process), on 127.0.0.1 only. Tester processes can be
replaced between rows (fake mode, k replicas, concurrency) while the rest keeps its state.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import nats
from nats.aio.client import Client
from pymongo import MongoClient

from bench.mailboxes import DOMAIN
from mailwarden_runtime.auth import bearer_header
from mailwarden_runtime.auth.bootstrap import issue_token
from mailwarden_servers.devstack import ServiceProcess, ServiceSpec, load_or_create_keys
from mailwarden_servers.mongo import MongoWireServer
from mailwarden_servers.nats import NatsServer
from mailwarden_servers.ports import free_port
from mailwarden_servers.running import Running

__all__ = ["CORE", "DEFAULT_TESTER_ENV", "MailwardenSystem", "TesterConfig", "bus_quiet", "rpc"]

CORE = (
    ServiceSpec("profile-svc", "profile_svc.app:create_app", 0),
    ServiceSpec("mailbox-svc", "mailbox_svc.app:create_app", 0),
    ServiceSpec("alert-svc", "alert_svc.app:create_app", 0),
)
TESTER = "tester_svc.app:create_app"
DEFAULT_TESTER_ENV: dict[str, str] = {}


class TesterConfig:
    """How many tester processes and with which settings (env overrides)."""

    def __init__(self, processes: int, concurrency: int, fake: bool = False) -> None:
        self.processes = processes
        self.concurrency = concurrency
        self.fake = fake

    def key(self) -> tuple[int, int, bool]:
        return (self.processes, self.concurrency, self.fake)

    def env(self) -> dict[str, str]:
        env = {"MW_TESTER_CONCURRENCY": str(self.concurrency)}
        if self.fake:
            env |= {"MW_TESTER_FAKE_SUCCESS_FOR_BENCHMARKS": "true", "MW_DEV_MODE": "true"}
        return env


def tester_egress_env(ca_file: str) -> dict[str, str]:
    """What lets a benchmark tester reach the local mail stack: loopback allowed, the test CA trusted."""
    return {"MW_TESTER_ALLOW_NETWORKS": "127.0.0.0/8", "MW_TESTER_CA_FILE": ca_file}


class MailwardenSystem(Running):
    """``with MailwardenSystem(workdir, ca_file) as system:``; ``system.set_testers(cfg)`` per row."""

    def __init__(self, workdir: Path, ca_file: str, extra_env: Mapping[str, str] | None = None) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.nats = NatsServer(workdir / "nats")
        self.mongo = MongoWireServer(workdir / "mongo")
        self.ca_file = ca_file
        self.extra_env = dict(extra_env or {})
        self.core: list[ServiceProcess] = []
        self.testers: list[ServiceProcess] = []
        self.tester_config: TesterConfig | None = None
        self._generation = 0

    def env(self) -> dict[str, str]:
        keys = load_or_create_keys(self.workdir / "keys.env")
        return {
            "MW_NATS_URL": self.nats.url,
            "MW_MONGODB_URI": self.mongo.uri,
            **keys,
            **tester_egress_env(self.ca_file),
            "MW_ALERT_SMTP_HOST": "",  # no notification mail
            **self.extra_env,
        }

    def start(self) -> Self:
        self.nats.start()
        self.mongo.start()
        env = self.env()
        for spec in CORE:
            svc = ServiceProcess(self.workdir / "logs", spec, free_port(), env)
            self.core.append(svc.start())
        # The bench drives the system as an operator: an administrator API token, as the CLI finds it.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            token = pool.submit(asyncio.run, issue_token(self.nats.url, "bench-admin")).result(60)
        os.environ["MW_TOKEN"] = token
        return self

    def set_testers(self, config: TesterConfig) -> None:
        """(Re)start the tester processes unless they already run with this configuration."""
        if self.tester_config is not None and self.tester_config.key() == config.key():
            return
        for proc in self.testers:
            proc.stop()
        self.testers = []
        self._generation += 1
        env = self.env() | config.env()
        for i in range(config.processes):
            name = f"tester-svc-{self._generation}-{i + 1}"
            spec = ServiceSpec(name, TESTER, 0)
            proc = ServiceProcess(self.workdir / "logs", spec, free_port(), env | {"MW_INSTANCE": name})
            self.testers.append(proc.start())
        self.tester_config = config

    def stop(self) -> None:
        for proc in [*self.testers, *reversed(self.core)]:
            proc.stop()
        self.testers, self.core = [], []
        self.mongo.stop()
        self.nats.stop()

    def process_groups(self) -> dict[str, list[int]]:
        """Every process of the system by group: each service, the testers, nats, mongo."""
        groups = {svc.spec.name: [svc.pid] for svc in self.core if svc.pid is not None}
        groups["tester-svc"] = [p.pid for p in self.testers if p.pid is not None]
        groups["nats"] = [self.nats.pid] if self.nats.pid else []
        groups["mongo"] = [self.mongo.pid] if self.mongo.pid else []
        return groups

    def opcounters(self) -> dict[str, int]:
        """SecantusDB's serverStatus opcounters (one count per command, as MongoDB counts them)."""
        client: MongoClient[dict[str, Any]] = MongoClient(self.mongo.uri, serverSelectionTimeoutMS=5000)
        try:
            counters = client.admin.command("serverStatus")["opcounters"]
        finally:
            client.close()
        return {k: int(v) for k, v in counters.items()}


async def rpc(nc: Client, service: str, op: str, body: Mapping[str, Any], wait_s: float = 120.0) -> Any:
    """One NATS request-reply operation (``mailwarden.rpc.<service>.<op>``); raises on ``ok: false``."""
    token = os.environ.get("MW_TOKEN", "")
    msg = await nc.request(
        f"mailwarden.rpc.{service}.{op}",
        json.dumps(body).encode(),
        timeout=wait_s,
        headers=bearer_header(token),
    )
    reply = json.loads(msg.data)
    if not reply.get("ok"):
        raise RuntimeError(f"{service}.{op} failed: {reply}")
    return reply["result"]


ADMIN = {"kind": "user", "id": "bench-admin", "name": "Bench admin", "email": f"admin@{DOMAIN}"}


async def bench_profile(
    nc: Client,
    name: str,
    host: str,
    ports: tuple[int, int],
    allowed_ports: Sequence[int],
    advanced: Mapping[str, Any] | None = None,
) -> str:
    """The organisation's ports set to ``allowed_ports`` and a profile (IMAP with implicit TLS on
    ``ports[0]``, SMTP with STARTTLS on ``ports[1]`` of ``host``) that mailbox-svc knows: its id."""
    await rpc(
        nc, "profile-svc", "settings_put", {"port_preset": "custom", "allowed_ports": list(allowed_ports)}
    )
    profile = await rpc(
        nc,
        "profile-svc",
        "create",
        {
            "name": name,
            "owner": ADMIN,
            "incoming_protocol": "imap",
            "incoming": {"host": host, "port": ports[0], "tls": "implicit"},
            "use_same_settings_for_outgoing": False,
            "outgoing": {"host": host, "port": ports[1], "tls": "starttls"},
        }
        | ({"advanced": dict(advanced)} if advanced else {}),
    )
    await bus_quiet(nc)  # mailbox-svc knows the profile
    return str(profile["profile_id"])


async def bus_quiet(nc: Client, settle_s: float = 0.5, timeout_s: float = 600.0) -> float:
    """Wait until every durable consumer is caught up and no stream grows (outboxes drained).

    Returns the seconds waited. Used between set-up steps and rows, so one row's tail (alert
    read models, relays) never runs inside the next row's measurement.
    """
    js = nc.jetstream()
    started = time.monotonic()
    last: tuple[int, ...] | None = None
    while time.monotonic() - started < timeout_s:
        busy = False
        seqs: list[int] = []
        for stream in await js.streams_info():
            seqs.append(stream.state.last_seq)
            for info in await js.consumers_info(stream.config.name or ""):
                if (info.num_pending or 0) > 0 or (info.num_ack_pending or 0) > 0:
                    busy = True
        state = tuple(seqs)
        if not busy and state == last:
            return time.monotonic() - started
        last = state
        await asyncio.sleep(settle_s)
    raise TimeoutError(f"the bus did not settle within {timeout_s:.0f}s")


async def connect(url: str) -> Client:
    return await nats.connect(url, max_reconnect_attempts=3, name="mailwarden-bench")
