"""Fast versions of the chaos scenarios: the same code and checks as `make chaos`, smaller counts.

`chaos` is a plain top-level folder, not an installed package: make it importable here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from chaos.infra import Infra  # noqa: E402
from mailwarden_servers import DovecotServer, SmtpServer, TestCertificates  # noqa: E402


@pytest.fixture
def infra(
    tmp_path: Path, certs: TestCertificates, mongo_uri: str, dovecot: DovecotServer, smtp_server: SmtpServer
) -> Infra:
    """The session's servers; a scenario that stops the database brings its own."""
    return Infra(tmp_path, certs, mongo_uri, dovecot, smtp_server.port_starttls)
