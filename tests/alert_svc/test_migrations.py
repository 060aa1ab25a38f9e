"""alert-svc's one-time migrations (``alert_svc.store.migrations``): each runs once per database."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from alert_svc.store import Stores
from alert_svc.store.alerts import AlertDoc, cause_scope, mailbox_scope
from contracts.models import Owner, OwnerKind

T0 = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)


@pytest.fixture
def db(fresh_db: AsyncDatabase[dict[str, Any]]) -> AsyncDatabase[dict[str, Any]]:
    return fresh_db


def stored_before_open_in(alert_id: str, state: Literal["open", "resolved"]) -> dict[str, Any]:
    """A per-mailbox alert as stored before ``open_in`` existed."""
    doc = AlertDoc(
        id=alert_id,
        level="error",
        code="auth_failed",
        title="t",
        message="m",
        open_key=f"key-{alert_id}" if state == "open" else None,
        key=f"key-{alert_id}",
        recipient=Owner(kind=OwnerKind.USER, id="u1", name="U1"),
        recipient_key="user:u1",
        kind="mailbox",
        mailbox_id=f"mb-{alert_id}",
        profile_id="p1",
        direction="incoming",
        state=state,
        count=1,
        first_seen=T0,
        last_seen=T0,
    )
    return {k: v for k, v in doc.stored().items() if v is not None}


async def test_open_alerts_stored_before_open_in_get_their_scopes_once(
    db: AsyncDatabase[dict[str, Any]],
) -> None:
    alerts = db["alerts"]
    await alerts.insert_many([stored_before_open_in("a", "open"), stored_before_open_in("b", "resolved")])
    stores = Stores.on(db)
    await stores.ensure_indexes()
    by_id = {d["_id"]: d async for d in alerts.find({})}
    assert by_id["a"]["open_in"] == [
        mailbox_scope("mb-a"),
        cause_scope("user:u1", "p1", "auth_failed", "incoming"),
    ]
    assert "open_in" not in by_id["b"]
    assert await db["alert_svc_meta"].find_one({"_id": "open_in"}) is not None
    # Done once: an alert stored without scopes later is left as it is by the next start.
    await alerts.insert_one(stored_before_open_in("c", "open"))
    await Stores.on(db).ensure_indexes()
    assert "open_in" not in (await alerts.find_one({"_id": "c"}) or {})
