"""The database client: PyMongo's native async client (Motor is deprecated in its favour)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pymongo
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.monitoring import CommandListener

from mailwarden_runtime.settings import ServiceSettings

Document = dict[str, Any]


def create_client(
    settings: ServiceSettings, app_name: str, listeners: Sequence[CommandListener] = ()
) -> AsyncMongoClient[Document]:
    """The service's client; every write is acknowledged only once it is durable.

    ``w: majority, j: true``: a handler acks its message, and an operation answers, after its
    writes; a write the server acknowledged from memory is lost when the server is killed (the
    embedded server lost 6-22 of the last 50 acknowledged inserts on SIGKILL; chaos A4 then
    found results applied, published and gone, docs/reliability.md finding 9), so nothing would
    redo it. A replica set's default is ``majority`` already, journaled on a majority.
    ``listeners``: command listeners (the change-stream relay's :class:`OwnWrites`).
    """
    return AsyncMongoClient(
        settings.mongodb_uri,
        tz_aware=True,
        appname=app_name,
        serverSelectionTimeoutMS=5000,
        connectTimeoutMS=5000,
        timeoutMS=int(settings.mongodb_timeout_s * 1000),
        retryWrites=settings.mongodb_retry_writes,
        w="majority",
        journal=True,
        event_listeners=list(listeners),
    )


def database_name(prefix: str, service: str) -> str:
    """Each service owns its own database (``mailwarden_mailbox_svc``): no collection is shared."""
    return f"{prefix}_{service.replace('-', '_')}"


def database(
    client: AsyncMongoClient[Document], settings: ServiceSettings, service: str
) -> AsyncDatabase[Document]:
    return client[database_name(settings.mongodb_db, service)]


async def close(client: AsyncMongoClient[Document], timeout_s: float) -> None:
    """Close the client; with the server gone, its goodbye (``endSessions``) gives up after ``timeout_s``."""
    with pymongo.timeout(timeout_s):
        await client.close()


async def ping(client: AsyncMongoClient[Document]) -> bool:
    try:
        await client.admin.command("ping")
    except Exception:
        return False
    return True
