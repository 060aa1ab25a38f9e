"""Org settings decide what is recorded; profile-scope causes group; >50 % failing raises a profile alert."""

from __future__ import annotations

import email
from typing import Any

from alert_svc_helpers import (
    PROFILE_OWNER,
    mailbox_event,
    mailbox_ref,
    profile_event,
    settings_event,
    user,
)

from contracts.errors import ErrorCode, WarningCode
from contracts.models import Owner, OwnerKind
from contracts.testing import status_failed, status_succeeded
from mailwarden_runtime.mailboxuses import MAILBOX_USES, MailboxUses
from mailwarden_servers import eventually


async def _settings_applied(h: Any, version: int) -> None:
    async def check() -> bool:
        doc = await h.db["settings"].find_one({"_id": "org"})
        return bool(doc and doc["version"] == version)

    await eventually(check, what=f"settings v{version}")


async def test_levels_filter_and_notify_mailbox_owner_off(alert_svc: Any) -> None:
    owner = user("u10")
    async with alert_svc(alert_majority_min_mailboxes=10) as h:
        await h.publish(settings_event(1, ["error"], notify=False))
        await _settings_applied(h, 1)
        await h.publish(status_failed(mailbox_ref("mb10", owner), "t10", ErrorCode.AUTH_FAILED))
        await h.publish(
            status_succeeded(mailbox_ref("mb11", owner), "t11", (WarningCode.CERT_EXPIRING_SOON,))
        )
        await h.publish(status_failed(mailbox_ref("mb12", owner), "t12", ErrorCode.INBOX_UNAVAILABLE))
        await h.settled()
        walls = await h.wall(PROFILE_OWNER)
        assert {a["mailbox_id"] for a in walls} == {"mb10", "mb12"}
        assert await h.wall(owner) == []  # no error (owner not notified), no information (level off)

        await h.publish(settings_event(2, ["error", "warning", "information"], notify=True))
        await _settings_applied(h, 2)
        await h.publish(
            status_succeeded(mailbox_ref("mb11", owner), "t13", (WarningCode.CERT_EXPIRING_SOON,))
        )
        await h.publish(
            status_succeeded(mailbox_ref("mb13", owner), "t14", (WarningCode.CERT_EXPIRING_SOON,))
        )
        [warning] = await h.wait_wall(PROFILE_OWNER, 1, level="warning", count_at_least=2)
        assert warning["code"] == "cert_expiring_soon" and warning["kind"] == "warning"
        assert warning["mailbox_id"] is None and warning["affected_mailboxes"] == ["mb11", "mb13"]
        assert warning["count"] == 2
        infos = await h.wait_wall(owner, 2, level="information")
        assert {a["mailbox_id"] for a in infos} == {"mb11", "mb13"}

        # A success without the warning resolves it (the certificate was renewed).
        await h.publish(status_succeeded(mailbox_ref("mb11", owner), "t15"))
        await h.wait_wall(PROFILE_OWNER, 1, level="warning", state="resolved")


async def test_profile_scope_failures_group_into_one_profile_alert(alert_svc: Any) -> None:
    owners = [user(f"g{n}") for n in range(3)]
    refs = [mailbox_ref(f"gm{n}", o, profile="prfG") for n, o in enumerate(owners)]
    async with alert_svc(alert_group_min_mailboxes=2, alert_majority_min_mailboxes=10) as h:
        for n, ref in enumerate(refs):
            await h.publish(status_failed(ref, f"tg{n}", ErrorCode.DNS_NXDOMAIN))
        [group] = await h.wait_wall(PROFILE_OWNER, 1, state="open", kind_filter="group", affected=3)
        assert (
            group["code"] == "dns_nxdomain" and group["profile_id"] == "prfG" and group["mailbox_id"] is None
        )
        assert group["affected_mailboxes"] == ["gm0", "gm1", "gm2"]
        assert group["count"] == 2  # opened by the 2nd mailbox, counted by the 3rd
        assert "3 mailboxes of the email server profile prfG" in group["message"]
        assert "gm2@example.com" in group["message"]
        opened = await h.wall(PROFILE_OWNER, state="open")
        assert [a["kind"] for a in opened] == ["group"]  # the first mailbox's alert was folded in
        [folded] = await h.wall(PROFILE_OWNER, state="resolved")
        # The first mailbox handled (events may be handled out of order) had its own alert, now folded in.
        assert folded["mailbox_id"] in {"gm0", "gm1", "gm2"} and folded["resolved_reason"] == "grouped"
        for owner, ref in zip(owners, refs, strict=True):  # mailbox owners still get their own
            [mine] = await h.wait_wall(owner, 1)
            assert (
                mine["mailbox_id"] == ref.mailbox_id and "No action is required from you" in mine["message"]
            )

        # Recovering mailboxes leave the group; the last one resolves it.
        for n, ref in enumerate(refs):
            await h.publish(status_succeeded(ref, f"tg-ok{n}"))
        [resolved] = await h.wait_wall(PROFILE_OWNER, 1, kind_filter="group", state="resolved")
        assert resolved["resolved_reason"] == "recovered"


async def test_majority_failure_alert_and_email(alert_svc: Any, smtp_server: Any) -> None:
    admin = Owner(kind=OwnerKind.USER, id="admin-m", name="Mia Admin", email="admin-m@example.com")
    async with alert_svc(
        alert_smtp_host=smtp_server.host,
        alert_smtp_port=smtp_server.port_plain,
        alert_smtp_tls="none",
        alert_smtp_allow_networks="127.0.0.0/8",  # the local SMTP server, allowed explicitly
        alert_digest_interval_s=600,
    ) as h:
        await h.publish(profile_event("prfM", majority_email=True, owner=admin))
        owners = [user(f"m{n}") for n in range(4)]
        for n, owner in enumerate(owners):
            await h.publish(mailbox_event(f"mm{n}", owner, "prfM"))

        async def counted() -> bool:
            profile = await h.db["profiles"].find_one({"_id": "prfM"})
            return bool(profile) and len(await MailboxUses(h.db[MAILBOX_USES]).on_profile("prfM")) == 4

        await eventually(counted, what="profile and 4 mailboxes")
        for n in range(2):  # 2 of 4: not more than half
            await h.publish(status_failed(mailbox_ref(f"mm{n}", owners[n], "prfM", admin), f"tm{n}"))
        await h.wait_wall(admin, 2)
        assert not [a for a in await h.wall(admin) if a["kind"] == "majority"]
        await h.publish(status_failed(mailbox_ref("mm2", owners[2], "prfM", admin), "tm2"))
        [majority] = await h.wait_wall(admin, 1, kind_filter="majority")
        assert majority["code"] == "profile_majority_failure" and majority["level"] == "error"
        assert "3 of the 4 mailboxes" in majority["message"] and majority["test_id"] == "tm2"

        def majority_mail() -> list[Any]:
            return [
                m
                for m in smtp_server.messages
                if "admin-m@example.com" in m.rcpt_tos and b"More than half" in m.data
            ]

        async def mailed() -> list[Any]:
            return majority_mail()

        [mail] = await eventually(mailed, what="majority email")
        parsed = email.message_from_bytes(mail.data)
        assert parsed["X-Mailwarden-Alerts"] == "4"  # the pending digest (3 mailbox errors) went with it

        # One mailbox recovers: 2 of 4 is no majority any more.
        await h.publish(status_succeeded(mailbox_ref("mm0", owners[0], "prfM", admin), "tm-ok"))
        await h.wait_wall(admin, 1, kind_filter="majority", state="resolved")
