"""Session-wide real servers for the test suite (started lazily, stopped at session end).

Set MW_TEST_NATS_URL / MW_TEST_MONGODB_URI to use external servers instead of local ones;
MW_TEST_KEEP_WORKDIR=1 keeps the work directory (logs, configs, mail) for debugging.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from mailwarden_servers import (
    DovecotServer,
    MongoWireServer,
    NatsServer,
    SmtpServer,
    TestCertificates,
)

MAIL_USERS = {"alice": "alice-pw", "bob": "bob-pw"}


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
def nats_server(workdir: Path) -> Iterator[NatsServer]:
    """A local nats-server with JetStream (skips if an external NATS is configured)."""
    if os.environ.get("MW_TEST_NATS_URL"):
        pytest.skip("MW_TEST_NATS_URL is set: no local nats-server")
    with NatsServer(workdir / "nats") as server:
        yield server


@pytest.fixture(scope="session")
def nats_url(request: pytest.FixtureRequest) -> str:
    """MW_TEST_NATS_URL, or the URL of the local nats-server (started only then)."""
    external = os.environ.get("MW_TEST_NATS_URL")
    if external:
        return external
    server: NatsServer = request.getfixturevalue("nats_server")
    return server.url


@pytest.fixture(scope="session")
def mongo_server(workdir: Path) -> Iterator[MongoWireServer]:
    """A local MongoDB-wire server (skips if an external MongoDB is configured)."""
    if os.environ.get("MW_TEST_MONGODB_URI"):
        pytest.skip("MW_TEST_MONGODB_URI is set: no local MongoDB-wire server")
    with MongoWireServer(workdir / "mongo") as server:
        yield server


@pytest.fixture(scope="session")
def mongo_uri(request: pytest.FixtureRequest) -> str:
    """MW_TEST_MONGODB_URI, or the URI of the local server (started only then)."""
    external = os.environ.get("MW_TEST_MONGODB_URI")
    if external:
        return external
    server: MongoWireServer = request.getfixturevalue("mongo_server")
    return server.uri


@pytest.fixture(scope="session")
def dovecot(workdir: Path, certs: TestCertificates) -> Iterator[DovecotServer]:
    """Dovecot with alice/bob on IMAP(S) and POP3(S)."""
    with DovecotServer(workdir / "dovecot", certs, MAIL_USERS) as server:
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
