"""sync-svc against the real servers: its own NATS (JetStream), the Mongo-wire server and Dovecot."""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

sys.path.insert(0, str(Path(__file__).parent))

from sync_helpers import NAMES, Bus, Mailbox, running_bus, settings_for

from mailwarden_mailnet.resolve import StaticResolver
from mailwarden_servers import DovecotServer, NatsServer, TestCertificates
from sync_svc.app import create_app


@pytest.fixture
def sync_nats_url(private_nats: NatsServer) -> str:
    """A NATS of each sync test alone: its streams, durable consumers and KV buckets (leases,
    workers, host slots) hold nothing of another test. On one server for all, a test's workers also
    took over what earlier tests left on the shared durables and in the KV buckets, and synced their
    mailboxes on the same host. A durable name of its own per test would not isolate it: a new
    durable replays the whole stream, every earlier mailbox included."""
    return private_nats.url


@pytest.fixture
async def bus(sync_nats_url: str, dovecot: DovecotServer) -> AsyncIterator[Bus]:
    async with running_bus(sync_nats_url, dovecot) as bus:
        yield bus


@pytest.fixture
def new_box(new_mail_user: Callable[..., tuple[str, str]]) -> Callable[..., Mailbox]:
    def make(**kwargs: Any) -> Mailbox:
        user, password = new_mail_user()
        return Mailbox(mailbox_id=f"mbx-{uuid.uuid4().hex[:10]}", user=user, password=password, **kwargs)

    return make


@pytest.fixture
def sync_service(sync_nats_url: str, mongo_uri: str, certs: TestCertificates) -> Callable[..., Any]:
    """``async with sync_service(db, **settings) as app``: one sync-svc process, in-process."""

    @asynccontextmanager
    async def run(db: str, **overrides: Any) -> AsyncIterator[FastAPI]:
        settings = settings_for(sync_nats_url, mongo_uri, db, certs, **overrides)
        app = create_app(settings, resolver=StaticResolver(NAMES))
        async with app.router.lifespan_context(app):
            yield app

    return run


@pytest.fixture
def db_name() -> str:
    return f"s_{uuid.uuid4().hex[:10]}"
