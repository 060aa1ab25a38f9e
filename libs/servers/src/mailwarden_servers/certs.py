"""Test PKI made with trustme: one trusted CA plus deliberately broken server certificates."""

from __future__ import annotations

import datetime as dt
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import trustme

__all__ = ["SERVER_NAMES", "CertPair", "TestCertificates"]

SERVER_NAMES = ("localhost", "127.0.0.1", "mail.test")
WRONG_HOST_NAME = "other.example"


class CertPair(NamedTuple):
    """PEM chain (leaf first) and private key of one server certificate."""

    cert: Path
    key: Path


def _write_pair(directory: Path, stem: str, leaf: trustme.LeafCert, *extra_pems: bytes) -> CertPair:
    cert = directory / f"{stem}.pem"
    key = directory / f"{stem}.key"
    cert.write_bytes(b"".join(p.bytes() for p in leaf.cert_chain_pems) + b"".join(extra_pems))
    # Create the key file 0600 from the start instead of chmod-ing a world-readable file.
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(leaf.private_key_pem.bytes())
    os.chmod(key, 0o600)
    return CertPair(cert, key)


def _pair(directory: Path, stem: str) -> CertPair:
    return CertPair(directory / f"{stem}.pem", directory / f"{stem}.key")


@dataclass(frozen=True)
class TestCertificates:
    """Files of the test PKI. `server` is valid for localhost, 127.0.0.1 and mail.test.

    The variants exist so the tester can be checked against real handshake failures:
    `expired` (notAfter yesterday), `wrong_host` (only other.example), `self_signed` (issued
    by a throwaway CA that nobody trusts; the chain includes that root) and `expiring_soon`
    (valid, but expires in 5 days).
    """

    __test__ = False  # the name starts with "Test": keep pytest from collecting it

    directory: Path
    ca: Path
    server: CertPair
    expired: CertPair
    wrong_host: CertPair
    self_signed: CertPair
    expiring_soon: CertPair

    @classmethod
    def create(cls, directory: str | os.PathLike[str]) -> TestCertificates:
        """Generate every certificate into `directory` (ca.pem, server.pem, server.key, ...)."""
        out = Path(directory).resolve()
        out.mkdir(parents=True, exist_ok=True)
        now = dt.datetime.now(dt.UTC)
        ca = trustme.CA(organization_name="mailwarden test CA")
        ca.cert_pem.write_to_path(str(out / "ca.pem"))
        _write_pair(out, "server", ca.issue_cert(*SERVER_NAMES))
        _write_pair(
            out,
            "expired",
            ca.issue_cert(
                *SERVER_NAMES,
                not_before=now - dt.timedelta(days=30),
                not_after=now - dt.timedelta(days=1),
            ),
        )
        _write_pair(out, "wrong_host", ca.issue_cert(WRONG_HOST_NAME))
        rogue = trustme.CA(organization_name="untrusted throwaway CA")
        _write_pair(out, "self_signed", rogue.issue_cert(*SERVER_NAMES), rogue.cert_pem.bytes())
        _write_pair(
            out,
            "expiring_soon",
            ca.issue_cert(*SERVER_NAMES, not_after=now + dt.timedelta(days=5)),
        )
        return cls.load(out)

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> TestCertificates:
        """Refer to files made earlier by `create()` (e.g. in another process)."""
        d = Path(directory).resolve()
        certs = cls(
            directory=d,
            ca=d / "ca.pem",
            server=_pair(d, "server"),
            expired=_pair(d, "expired"),
            wrong_host=_pair(d, "wrong_host"),
            self_signed=_pair(d, "self_signed"),
            expiring_soon=_pair(d, "expiring_soon"),
        )
        missing = [p for p in (certs.ca, *certs.server) if not p.exists()]
        if missing:
            raise FileNotFoundError(f"test certificates missing: {missing}")
        return certs

    def client_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts only the test CA."""
        return ssl.create_default_context(cafile=str(self.ca))

    def server_context(self, pair: CertPair | None = None) -> ssl.SSLContext:
        """A server-side context presenting `pair` (default: the valid server certificate)."""
        chosen = pair or self.server
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(chosen.cert), str(chosen.key))
        return ctx
