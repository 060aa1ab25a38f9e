"""Fixtures of the end-to-end email flows (the stack itself: e2e_helpers.py)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
from fastapi import FastAPI

sys.path.insert(0, str(Path(__file__).parent))

from e2e_helpers import E2eFactory, e2e_factory

from mailwarden_servers import DovecotServer, SmtpServer


@pytest.fixture
def e2e_stack(
    dovecot: DovecotServer,
    smtp_server: SmtpServer,
    mailwarden_services: Callable[[], AbstractAsyncContextManager[dict[str, FastAPI]]],
) -> E2eFactory:
    """The services, the one under test, settings, a profile and one mailbox (e2e_helpers.py)."""
    return e2e_factory(dovecot, smtp_server, mailwarden_services)
