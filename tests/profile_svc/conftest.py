"""profile-svc fixtures: the app on a private NATS server (clean streams) and its own database."""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from fastapi import FastAPI
from nats.aio.client import Client
from nats.aio.msg import Msg
from pymongo import AsyncMongoClient

from mailwarden_runtime.auth import bearer_header
from mailwarden_runtime.auth.bootstrap import issue_token
from mailwarden_runtime.mongo import database_name
from mailwarden_servers import NatsServer
from profile_svc.app import create_app
from profile_svc.config import ProfileSettings

sys.path.insert(0, str(Path(__file__).parent))
from profile_svc_helpers import Recorder


@pytest.fixture
def settings(private_nats: NatsServer, mongo_uri: str) -> ProfileSettings:
    return ProfileSettings(
        nats_url=private_nats.url,
        mongodb_uri=mongo_uri,
        mongodb_db="t_" + uuid.uuid4().hex[:12],
        dev_mode=True,
        log_setup=False,
    )


@pytest.fixture
async def nc(private_nats: NatsServer) -> AsyncIterator[Client]:
    client = await nats.connect(private_nats.url)
    yield client
    await client.drain()


@pytest.fixture
async def events(nc: Client) -> Recorder:
    """Core subscriptions on the real server: JetStream publishes reach them too."""
    recorder = Recorder()

    async def on_msg(msg: Msg) -> None:
        recorder.add(msg)

    await nc.subscribe("mailwarden.profile.>", cb=on_msg)
    await nc.subscribe("mailwarden.settings.>", cb=on_msg)
    await nc.flush()
    return recorder


@pytest.fixture
async def app(settings: ProfileSettings, events: Recorder) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def token(private_nats: NatsServer) -> str:
    return await issue_token(private_nats.url)


@pytest.fixture
async def client(app: FastAPI, token: str) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://svc", headers=bearer_header(token)
    ) as c:
        yield c


@pytest.fixture
async def db(settings: ProfileSettings) -> AsyncIterator[Any]:
    """A second client on the service's database, for inspecting what was (not) stored."""
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongodb_uri, tz_aware=True)
    yield mongo[database_name(settings.mongodb_db, "profile-svc")]
    await mongo.close()
