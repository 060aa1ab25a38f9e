"""Fixtures for mailbox-svc tests (helpers live in mailbox_helpers.py beside this file)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mailwarden_servers import NatsServer

sys.path.insert(0, str(Path(__file__).parent))

from mailbox_helpers import MakeHarness, harness_factory


@pytest.fixture
def make_harness(private_nats: NatsServer, mongo_uri: str) -> MakeHarness:
    """``async with make_harness(**settings) as h``: one app on a fresh database; same db on re-entry."""
    return harness_factory(private_nats.url, mongo_uri)
