"""The servers a scenario runs against: MongoDB-wire, Dovecot and SMTP (NATS is per scenario).

``make chaos`` starts its own (``started()``); the fast versions in ``tests/reliability`` pass the
test session's servers instead.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from chaos.harness import MailTarget
from mailwarden_servers import DovecotServer, MongoWireServer, SmtpProcess, TestCertificates

MAIL_USER = ("alice", "alice-pw")


@dataclass
class Infra:
    workdir: Path
    certs: TestCertificates
    mongo_uri: str
    dovecot: DovecotServer
    smtp_starttls_port: int
    mongo: MongoWireServer | None = None  # only when the scenario may stop it

    @property
    def mail_ports(self) -> list[int]:
        return [self.dovecot.imaps_port, self.smtp_starttls_port]


def direct_target(infra: Infra) -> MailTarget:
    """Dovecot IMAPS and SMTP STARTTLS as they are."""
    return MailTarget("127.0.0.1", infra.dovecot.imaps_port, infra.smtp_starttls_port, *MAIL_USER)


@contextlib.contextmanager
def slow_target(infra: Infra, workdir: Path, delay_ms: float) -> Iterator[MailTarget]:
    """Dovecot and SMTP behind latency proxies (``delay_ms`` each way): a test takes ~18 RTTs."""
    from bench.latency_proxy import LatencyProxyProcess

    with (
        LatencyProxyProcess(workdir / "proxy-imaps", infra.dovecot.imaps_port, delay_ms) as imaps,
        LatencyProxyProcess(workdir / "proxy-smtp", infra.smtp_starttls_port, delay_ms) as smtp,
    ):
        yield MailTarget("127.0.0.1", imaps.port, smtp.port, *MAIL_USER)


@contextlib.contextmanager
def started(workdir: Path) -> Iterator[Infra]:
    """Dovecot (tuned for many logins), the SMTP server process and a MongoDB-wire server."""
    from bench.stack import dovecot_tuning

    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)
    certs = TestCertificates.create(workdir / "certs")
    users = dict([MAIL_USER])
    # Every scenario mailbox logs in as this one user from one address (Dovecot's default: 10).
    tuning = {**dovecot_tuning(os.cpu_count() or 1), "max_userip_connections": 1000}
    dovecot = DovecotServer(workdir / "dovecot", certs, users, **tuning)  # type: ignore[arg-type]
    smtp = SmtpProcess(workdir / "smtp", certs, users)
    mongo = MongoWireServer(workdir / "mongo")
    with dovecot, smtp, mongo:
        yield Infra(workdir, certs, mongo.uri, dovecot, smtp.port_starttls, mongo)
