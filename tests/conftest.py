"""Session-wide real servers for the test suite (started lazily, stopped at session end).

Set MW_TEST_NATS_URL / MW_TEST_MONGODB_URI to use external servers instead of local ones;
MW_TEST_BACKEND=containers runs NATS and a real MongoDB 7 in Docker containers (testcontainers;
needs a Docker engine, which our CI machines do not have, so that path is not exercised there);
MW_TEST_KEEP_WORKDIR=1 keeps the work directory (logs, configs, mail) for debugging.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from mailwarden_runtime.auth.bootstrap import issue_token
from mailwarden_runtime.crypto import KeyRing
from mailwarden_servers import (
    DovecotServer,
    MongoWireServer,
    NatsServer,
    SmtpServer,
    TestCertificates,
)

MAIL_USERS = {"alice": "alice-pw", "bob": "bob-pw"}

# The session's shared servers, so a failing test's report carries what their logs said meanwhile.
_SHARED_SERVERS: dict[str, NatsServer | MongoWireServer] = {}
_LOG_SIZES = pytest.StashKey[dict[str, int]]()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    item.stash[_LOG_SIZES] = {name: _log_size(server) for name, server in _SHARED_SERVERS.items()}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """On a failure, add what each shared server logged during the test (e.g. why NATS dropped a client)."""
    report = yield
    if report.when != "call" or not report.failed:
        return report
    for name, start in item.stash.get(_LOG_SIZES, {}).items():
        path = _SHARED_SERVERS[name].log_path
        with contextlib.suppress(OSError), path.open("rb") as log:
            log.seek(start)
            lines = log.read().decode(errors="replace").splitlines()
        if lines:
            report.sections.append((f"{name} log during the test", "\n".join(lines[-40:])))
    return report


def _log_size(server: NatsServer | MongoWireServer) -> int:
    try:
        return server.log_path.stat().st_size
    except OSError:
        return 0


@pytest.fixture(scope="session", autouse=True)
async def no_task_outlives_the_session() -> AsyncIterator[None]:
    """Cancel what tests left running before the session's loop closes, more than once if need be.

    The loop's own close cancels each task once and then waits without a bound, so one task that
    swallows a cancellation (seen once in a full run) would hang the suite. What is still running
    after this is printed, so the leak stays visible.
    """
    yield
    me = asyncio.current_task()
    pending: list[asyncio.Task[object]] = []
    for _ in range(20):
        pending = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
        if not pending:
            return
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=0.5)
    names = ", ".join(sorted({t.get_name() for t in pending if not t.done()}))
    print(f"\ntasks still running after the session: {names}", file=sys.stderr)


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    """0755 temp dir: Dovecot's unprivileged processes must traverse it (tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="mailwarden-tests-"))
    path.chmod(0o755)
    yield path
    if not os.environ.get("MW_TEST_KEEP_WORKDIR"):
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def certs(workdir: Path) -> TestCertificates:
    """Test CA, the valid server certificate and the broken variants."""
    return TestCertificates.create(workdir / "certs")


@pytest.fixture(scope="session")
def mail_users() -> dict[str, str]:
    """The users every mail server knows (copy: tests may not mutate the original)."""
    return dict(MAIL_USERS)


@pytest.fixture(scope="session")
def containers() -> Iterator[dict[str, str]]:
    """NATS (JetStream) and MongoDB 7 (one-node replica set) in Docker, for MW_TEST_BACKEND=containers."""
    try:
        from testcontainers.core.container import DockerContainer
        from testcontainers.core.waiting_utils import wait_for_logs
    except ImportError as exc:  # pragma: no cover - dev dependency
        pytest.fail(f"MW_TEST_BACKEND=containers needs testcontainers: {exc}")
    try:
        nats_c = DockerContainer("nats:2.11").with_command("-js").with_exposed_ports(4222)
        mongo_c = (
            DockerContainer("mongo:7").with_command("--replSet rs0 --bind_ip_all").with_exposed_ports(27017)
        )
        nats_c.start()
        mongo_c.start()
    except Exception as exc:
        pytest.fail(f"MW_TEST_BACKEND=containers but no Docker engine answered: {exc}")
    try:
        wait_for_logs(nats_c, "Server is ready", timeout=60)
        wait_for_logs(mongo_c, "Waiting for connections", timeout=120)
        code, out = mongo_c.exec(
            [
                "mongosh",
                "--quiet",
                "--eval",
                "rs.initiate({_id:'rs0',members:[{_id:0,host:'localhost:27017'}]}).ok",
            ]
        )
        if code != 0:
            pytest.fail(f"could not initiate the MongoDB replica set: {out!r}")
        host = nats_c.get_container_host_ip()
        yield {
            "nats_url": f"nats://{host}:{nats_c.get_exposed_port(4222)}",
            "mongo_uri": f"mongodb://{host}:{mongo_c.get_exposed_port(27017)}/?directConnection=true",
        }
    finally:
        nats_c.stop()
        mongo_c.stop()


def _backend_is_containers() -> bool:
    return os.environ.get("MW_TEST_BACKEND", "local") == "containers"


@pytest.fixture(scope="session")
def nats_server(workdir: Path) -> Iterator[NatsServer]:
    """A local nats-server with JetStream (skips if an external NATS is configured)."""
    if os.environ.get("MW_TEST_NATS_URL"):
        pytest.skip("MW_TEST_NATS_URL is set: no local nats-server")
    with NatsServer(workdir / "nats") as server:
        _SHARED_SERVERS["nats-server"] = server
        yield server
        _SHARED_SERVERS.pop("nats-server", None)


@pytest.fixture
def private_nats(workdir: Path) -> Iterator[NatsServer]:
    """A NATS server of this test alone: no streams, consumers, buckets or durables left by others
    (one starts in ~25 ms)."""
    with NatsServer(workdir / f"nats-{uuid.uuid4().hex[:8]}") as server:
        yield server


@pytest.fixture(scope="session")
def nats_url(request: pytest.FixtureRequest) -> str:
    """MW_TEST_NATS_URL, or the URL of the local nats-server (started only then)."""
    external = os.environ.get("MW_TEST_NATS_URL")
    if external:
        return external
    if _backend_is_containers():
        return str(request.getfixturevalue("containers")["nats_url"])
    server: NatsServer = request.getfixturevalue("nats_server")
    return server.url


@pytest.fixture(scope="session")
def mongo_server(workdir: Path) -> Iterator[MongoWireServer]:
    """A local MongoDB-wire server (skips if an external MongoDB is configured)."""
    if os.environ.get("MW_TEST_MONGODB_URI"):
        pytest.skip("MW_TEST_MONGODB_URI is set: no local MongoDB-wire server")
    with MongoWireServer(workdir / "mongo") as server:
        _SHARED_SERVERS["mongo-wire server"] = server
        yield server
        _SHARED_SERVERS.pop("mongo-wire server", None)


@pytest.fixture(scope="session")
def mongo_uri(request: pytest.FixtureRequest) -> str:
    """MW_TEST_MONGODB_URI, or the URI of the local server (started only then)."""
    external = os.environ.get("MW_TEST_MONGODB_URI")
    if external:
        return external
    if _backend_is_containers():
        return str(request.getfixturevalue("containers")["mongo_uri"])
    server: MongoWireServer = request.getfixturevalue("mongo_server")
    return server.uri


@pytest.fixture
async def fresh_db(mongo_uri: str) -> AsyncIterator[AsyncDatabase[dict[str, Any]]]:
    """A database of the test's own on the session's MongoDB-wire server, dropped after it (its
    client timezone-aware: times read back as written). For a store tested on its own."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri, tz_aware=True)
    name = f"t_{uuid.uuid4().hex[:12]}"
    try:
        yield client[name]
    finally:
        await client.drop_database(name)
        await client.close()


@pytest.fixture(scope="session")
def dovecot(workdir: Path, certs: TestCertificates) -> Iterator[DovecotServer]:
    """Dovecot with alice/bob on IMAP(S) and POP3(S)."""
    # Bulk flows (tests/reliability) test many mailboxes that log in as one user from one address.
    with DovecotServer(workdir / "dovecot", certs, MAIL_USERS, max_userip_connections=1000) as server:
        yield server


@pytest.fixture
def new_mail_user(dovecot: DovecotServer) -> Callable[..., tuple[str, str]]:
    """Factory: create a fresh Dovecot user, returns (name, password)."""

    def make(name: str | None = None, password: str | None = None) -> tuple[str, str]:
        user = name or f"user-{uuid.uuid4().hex[:10]}"
        pw = password or f"{user}-pw"
        dovecot.add_user(user, pw)
        return user, pw

    return make


@pytest.fixture(scope="session")
def smtp_server(certs: TestCertificates) -> Iterator[SmtpServer]:
    """In-process SMTP: STARTTLS, implicit TLS and a plain port, users alice/bob."""
    with SmtpServer(certs, MAIL_USERS, plain=True) as server:
        yield server


ServicesFactory = Callable[[], AbstractAsyncContextManager[dict[str, FastAPI]]]


@pytest.fixture(scope="session")
def mailwarden_services(nats_url: str, mongo_uri: str, certs: TestCertificates) -> ServicesFactory:
    """Factory: ``async with mailwarden_services() as apps`` runs all four services in-process.

    Configured only through the environment, as in production, with fresh key rings and a fresh
    database prefix each time; the tester may reach loopback and trusts the test CA.
    ``apps["profile"].state.token`` (on every app) is an administrator API token for the callers.
    """

    @asynccontextmanager
    async def run() -> AsyncIterator[dict[str, FastAPI]]:
        env = {
            "MW_NATS_URL": nats_url,
            "MW_MONGODB_URI": mongo_uri,
            "MW_MONGODB_DB": f"t_{uuid.uuid4().hex[:12]}",
            "MW_LOG_SETUP": "false",
            # each service its own at-rest ring, as deployed (a key of one opens nothing of the other's)
            "MW_PROFILE_CREDENTIAL_KEYS": KeyRing.generate_key_text("profile-cred1"),
            "MW_MAILBOX_CREDENTIAL_KEYS": KeyRing.generate_key_text("mailbox-cred1"),
            "MW_TRANSIT_KEYS": KeyRing.generate_key_text("transit1"),
            "MW_ALERT_WEBHOOK_KEYS": KeyRing.generate_key_text("hook1"),
            "MW_TESTER_ALLOW_NETWORKS": "127.0.0.0/8",
            "MW_TESTER_CA_FILE": str(certs.ca),
            "MW_TESTER_STEP_TIMEOUT_S": "10",
        }
        from alert_svc.app import create_app as alert_app
        from mailbox_svc.app import create_app as mailbox_app
        from profile_svc.app import create_app as profile_app
        from tester_svc.app import create_app as tester_app

        factories: dict[str, Callable[[], FastAPI]] = {
            "profile": profile_app,
            "mailbox": mailbox_app,
            "alert": alert_app,
            "tester": tester_app,
        }
        with pytest.MonkeyPatch.context() as mp:
            for key, value in env.items():
                mp.setenv(key, value)
            async with AsyncExitStack() as stack:
                apps: dict[str, FastAPI] = {}
                token = await issue_token(nats_url)
                for name, factory in factories.items():
                    app = factory()
                    await stack.enter_async_context(app.router.lifespan_context(app))
                    app.state.token = token
                    apps[name] = app
                yield apps

    return run
