"""Sync error episodes on the wall: one alert per recipient and episode, resolved by the recovery alone."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from alert_svc_helpers import PROFILE_OWNER, mailbox_ref, user

from contracts.email import MailboxSyncFailed, MailboxSyncRecovered
from contracts.errors import CATALOG, ErrorCode
from contracts.models import MailboxRef, TestError
from contracts.testing import status_succeeded
from mailwarden_servers import eventually

SYNC_STREAM = "MW_EMAIL"


def sync_failed(
    ref: MailboxRef, episode: uuid.UUID, failures: int = 1, code: ErrorCode = ErrorCode.AUTH_FAILED
) -> MailboxSyncFailed:
    now = datetime.now(UTC)
    return MailboxSyncFailed(
        mailbox=ref,
        protocol="imap",
        error=TestError.of(code, "login", "no"),
        episode_id=episode,
        failures=failures,
        first_failed_at=now,
        next_attempt_at=now + timedelta(seconds=30),
    )


def sync_recovered(ref: MailboxRef, episode: uuid.UUID, failures: int) -> MailboxSyncRecovered:
    now = datetime.now(UTC)
    return MailboxSyncRecovered(
        mailbox=ref, protocol="imap", episode_id=episode, failures=failures, first_failed_at=now,
        recovered_at=now,
    )  # fmt: skip


async def settled(h: Any) -> None:
    await h.settled("alert-svc-sync-failed", SYNC_STREAM)
    await h.settled("alert-svc-sync-recovered", SYNC_STREAM)


async def test_one_alert_per_episode_for_both_owners_resolved_by_the_recovery(alert_svc: Any) -> None:
    owner = user("s1")
    ref = mailbox_ref("mbxs1", owner)
    episode = uuid.uuid4()
    async with alert_svc() as h:
        await h.publish(sync_failed(ref, episode))
        await h.publish(sync_failed(ref, episode))  # redelivered with a new envelope id: the same episode
        [mine] = await h.wait_wall(owner, 1, kind_filter="sync")
        [theirs] = await h.wait_wall(PROFILE_OWNER, 1, kind_filter="sync")
        await settled(h)
        for alert in (mine, theirs):
            assert alert["state"] == "open" and alert["level"] == "error" and alert["count"] == 1
            assert alert["code"] == "mailbox_sync_failed" and alert["direction"] == "incoming"
            assert (
                "Synchronizing the IMAP inbox of mbxs1@example.com failed at the 'login' step"
                in (alert["message"])
            )
            assert alert["remediation"] == CATALOG[ErrorCode.AUTH_FAILED].remediation

        # The episode's code changes: the same alert, counted once more and reworded.
        await h.publish(sync_failed(ref, episode, failures=4, code=ErrorCode.TCP_REFUSED))
        [mine] = await h.wait_wall(owner, 1, kind_filter="sync", count_at_least=2)
        assert CATALOG[ErrorCode.TCP_REFUSED].message in mine["message"]

        # A successful test says nothing about the sync: the alert stays open.
        await h.publish(status_succeeded(ref, "t-ok"))
        await h.settled()
        assert [a["state"] for a in await h.wall(owner) if a["kind"] == "sync"] == ["open"]

        await h.publish(sync_recovered(ref, episode, 4))

        async def resolved() -> bool:
            walls = [a for o in (owner, PROFILE_OWNER) for a in await h.wall(o) if a["kind"] == "sync"]
            return [a["state"] for a in walls] == ["resolved", "resolved"]

        await eventually(resolved, what="both sync alerts resolved")
        [mine] = [a for a in await h.wall(owner) if a["kind"] == "sync"]
        assert mine["resolved_reason"] == "sync_recovered"

        # The episode's first failure handled again after its recovery: nothing reopens.
        await h.publish(sync_failed(ref, episode))
        await settled(h)
        assert [a["state"] for a in await h.wall(owner) if a["kind"] == "sync"] == ["resolved"]

        # The next episode is a new alert; the old episode's late recovery leaves it open.
        second = uuid.uuid4()
        await h.publish(sync_failed(ref, second))
        await h.wait_wall(owner, 2, kind_filter="sync")
        await h.publish(sync_recovered(ref, episode, 4))
        await settled(h)
        states = sorted(a["state"] for a in await h.wall(owner) if a["kind"] == "sync")
        assert states == ["open", "resolved"]


async def test_the_org_setting_keeps_the_mailbox_owner_out(alert_svc: Any) -> None:
    from alert_svc_helpers import settings_event

    owner = user("s2")
    ref = mailbox_ref("mbxs2", owner)
    async with alert_svc() as h:
        await h.publish(settings_event(2, ["error", "information"], notify=False))
        await h.settled("alert-svc-settings")
        await h.publish(sync_failed(ref, uuid.uuid4()))
        await h.wait_wall(PROFILE_OWNER, 1, kind_filter="sync")
        await settled(h)
        assert [a for a in await h.wall(owner) if a["kind"] == "sync"] == []
