"""Fixtures for alert-svc: a private NATS per test, the app factory with its own database."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from nats.aio.msg import Msg
from pymongo import AsyncMongoClient

from alert_svc.app import create_app
from alert_svc.config import Settings
from mailwarden_runtime.auth import bearer_header
from mailwarden_runtime.auth.bootstrap import issue_token
from mailwarden_runtime.mongo import database_name
from mailwarden_servers import NatsServer

sys.path.insert(0, str(Path(__file__).parent))
from alert_svc_helpers import Harness


@pytest.fixture
async def alert_svc(private_nats: NatsServer, mongo_uri: str) -> AsyncIterator[Callable[..., Any]]:
    """Factory: ``async with alert_svc(**settings) as h`` runs the app; the database survives restarts."""
    db_name = "t_" + uuid.uuid4().hex[:12]
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri, tz_aware=True)

    @asynccontextmanager
    async def run(**overrides: Any) -> AsyncIterator[Harness]:
        values: dict[str, Any] = {
            "nats_url": private_nats.url,
            "mongodb_uri": mongo_uri,
            "mongodb_db": db_name,
            "dev_mode": True,
            "log_setup": False,
            "alert_channel_poll_s": 0.1,
            "alert_webhook_backoff_s": 0.2,
            "alert_email_backoff_s": 0.2,
        } | overrides
        app = create_app(Settings(**values))
        nc = await nats.connect(private_nats.url)
        token = await issue_token(private_nats.url)
        harness = Harness(
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://svc", headers=bearer_header(token)
            ),
            nc,
            mongo[database_name(db_name, "alert-svc")],
            token=token,
        )

        async def on_alert(msg: Msg) -> None:
            harness.subjects_seen.append(msg.subject)
            harness.alerts_seen.append(json.loads(msg.data))

        await nc.subscribe("mailwarden.alerts.>", cb=on_alert)
        try:
            async with app.router.lifespan_context(app):
                yield harness
        finally:
            await harness.http.aclose()
            await nc.close()

    yield run
    await mongo.drop_database(db_name)
    await mongo.close()
