"""Real servers (NATS, MongoDB wire, Dovecot, SMTP) started locally for tests, dev and benchmarks.

Names are imported lazily: `python -m mailwarden_servers.smtp` must not find its own module
already imported by the package, and NATS-only users need not import aiosmtpd or pymongo.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mailwarden_servers.certs import CertPair, TestCertificates
    from mailwarden_servers.dovecot import DovecotServer
    from mailwarden_servers.mongo import MongoWireServer
    from mailwarden_servers.nats import NatsServer
    from mailwarden_servers.ports import ServerStartError, free_port, wait_port
    from mailwarden_servers.process import ManagedProcess
    from mailwarden_servers.silent import SilencingProxy
    from mailwarden_servers.smtp import ReceivedMessage, SmtpProcess, SmtpServer
    from mailwarden_servers.waiting import eventually

_WHERE = {
    "CertPair": "certs",
    "TestCertificates": "certs",
    "DovecotServer": "dovecot",
    "MongoWireServer": "mongo",
    "NatsServer": "nats",
    "ServerStartError": "ports",
    "free_port": "ports",
    "wait_port": "ports",
    "ManagedProcess": "process",
    "SilencingProxy": "silent",
    "ReceivedMessage": "smtp",
    "SmtpProcess": "smtp",
    "SmtpServer": "smtp",
    "eventually": "waiting",
}

__all__ = [
    "CertPair",
    "DovecotServer",
    "ManagedProcess",
    "MongoWireServer",
    "NatsServer",
    "ReceivedMessage",
    "ServerStartError",
    "SilencingProxy",
    "SmtpProcess",
    "SmtpServer",
    "TestCertificates",
    "eventually",
    "free_port",
    "wait_port",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted(__all__)
