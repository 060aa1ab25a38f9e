"""Fixtures for mailbox-svc tests (helpers live in mailbox_helpers.py beside this file)."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailwarden_servers import NatsServer

sys.path.insert(0, str(Path(__file__).parent))

from mailbox_helpers import MakeHarness, harness_factory


@pytest.fixture
def private_nats(workdir: Path) -> Iterator[str]:
    """A NATS server of this test alone: no streams or consumers left by others."""
    with NatsServer(workdir / f"nats-{uuid.uuid4().hex[:8]}") as server:
        yield server.url


@pytest.fixture
def make_harness(private_nats: str, mongo_uri: str) -> MakeHarness:
    """``async with make_harness(**settings) as h``: one app on a fresh database; same db on re-entry."""
    return harness_factory(private_nats, mongo_uri)
