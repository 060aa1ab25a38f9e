"""The database client: PyMongo's native async client (Motor is deprecated in its favour)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

import pymongo
import pymongo.lock
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.monitoring import CommandListener

from mailwarden_runtime.settings import ServiceSettings

Document = dict[str, Any]
"""A document as the driver reads and writes it (raw BSON): only at the repository edge, i.e. the
driver's database and collection types, and the queries and updates a typed filter or write
(``WallFilter``, ``MailboxWrite``, ``JobWrite``, ``documents.fields``) builds; above it, models."""
T = TypeVar("T")


async def _wait_in_this_task(work: Awaitable[T], seconds: float | None) -> T:
    """``asyncio.wait_for`` as Python 3.12 has it: the timeout cancels this task, not a task of its own."""
    async with asyncio.timeout(seconds):
        return await work


def _condition_waits_in_the_waiting_task() -> None:
    """Make PyMongo's async condition waits time out in the waiting task (Python < 3.12 only).

    PyMongo waits on its topology and pool conditions with ``asyncio.wait_for(cond.wait(), t)``.
    On 3.11 that runs the wait as a task of its own and, on the timeout, cancels it and waits for it;
    the wait must take the lock back first, so when the timeout and a wake-up meet, the lock ends up
    held with nobody to release it: every later server selection of that client waits for it for
    ever. Chaos A4 at full size (database killed 20 s) left alert-svc's client that way: tasks in
    ``_cancel_and_wait`` and in ``select_servers > acquire``, 666 status events never handled.
    3.12 implements ``wait_for`` with ``asyncio.timeout`` in the calling task, which is this.
    """
    waits: Any = pymongo.lock  # the module whose ``wait_for`` its condition waits call
    if sys.version_info < (3, 12) and waits.wait_for is asyncio.wait_for:
        waits.wait_for = _wait_in_this_task


_condition_waits_in_the_waiting_task()


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
