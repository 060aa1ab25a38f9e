"""The login operation: sync-svc and sender-svc get a mailbox's login sealed for their purpose, the
profile's current host and port and a short time; no human role may, and a redirected login is
refused as for Test & Enable."""

from __future__ import annotations

import json
from typing import Any

from mailbox_helpers import Harness, MakeHarness, mailbox_body

from contracts.events import ProfileUpdated
from contracts.models import Endpoint, SealedSecret, TlsMode
from mailwarden_runtime.auth import bearer_header
from mailwarden_runtime.auth.service_tokens import service_token
from mailwarden_runtime.crypto import KeyRing, SealError
from mailwarden_runtime.sealing import open_for_use
from mailwarden_servers import eventually


async def ask(h: Harness, token: str, body: dict[str, Any]) -> dict[str, Any]:
    msg = await h.nc.request(
        "mailwarden.rpc.mailbox-svc.login",
        json.dumps(body).encode(),
        timeout=10,
        headers=bearer_header(token),
    )
    return dict(json.loads(msg.data))


async def test_each_service_gets_its_own_direction_bound_to_purpose_host_and_port(
    make_harness: MakeHarness,
) -> None:
    async with make_harness() as h:
        await h.profile()
        assert (await h.http.post("/mailboxes", json=mailbox_body(1, mailbox_id="a"))).status_code == 201
        transit = KeyRing.parse(h.settings.transit_keys.get_secret_value())  # type: ignore[union-attr]
        sync, sender = service_token(transit, "sync-svc"), service_token(transit, "sender-svc")

        got = await ask(h, sync, {"mailbox_id": "a", "direction": "incoming", "purpose": "sync"})
        assert got["ok"], got
        result = got["result"]
        assert (result["host"], result["port"]) == ("imap.example.com", 993)
        assert "pw-secret-1" not in json.dumps(got)
        sealed = SealedSecret.model_validate(result["sealed"])
        where = {"mailbox_id": "a", "direction": "incoming", "host": "imap.example.com", "port": 993}
        plain = json.loads(open_for_use(transit, sealed, purpose="sync", **where))
        assert (plain["username"], plain["password"]) == ("user1", "pw-secret-1")
        for wrong in ({"purpose": "send"}, {"mailbox_id": "b"}, {"port": 994}, {"host": "evil.example"}):
            try:
                open_for_use(transit, sealed, **{"purpose": "sync", **where, **wrong})  # type: ignore[arg-type]
            except SealError:
                continue
            raise AssertionError(f"opened with {wrong}")

        out = await ask(h, sender, {"mailbox_id": "a", "direction": "outgoing", "purpose": "send"})
        assert out["ok"] and out["result"]["port"] != 993, out

        # Each service only its own direction; a human (the admin token) not at all.
        refused = await ask(h, sync, {"mailbox_id": "a", "direction": "outgoing", "purpose": "send"})
        assert refused["status"] == 403, refused
        refused = await ask(h, sender, {"mailbox_id": "a", "direction": "incoming", "purpose": "sync"})
        assert refused["status"] == 403, refused
        refused = await ask(h, h.token, {"mailbox_id": "a", "direction": "incoming", "purpose": "sync"})
        assert refused["status"] == 403, refused
        r = await h.http.post("/mailboxes/a/login", json={"direction": "incoming", "purpose": "sync"})
        assert r.status_code == 403, r.text


async def test_a_login_entered_for_another_server_is_refused(make_harness: MakeHarness) -> None:
    async with make_harness() as h:
        profile = await h.profile()
        assert (await h.http.post("/mailboxes", json=mailbox_body(1, mailbox_id="a"))).status_code == 201
        transit = KeyRing.parse(h.settings.transit_keys.get_secret_value())  # type: ignore[union-attr]
        sync = service_token(transit, "sync-svc")
        body = {"mailbox_id": "a", "direction": "incoming", "purpose": "sync"}
        assert (await ask(h, sync, body))["ok"]
        moved = profile.model_copy(
            update={
                "incoming": Endpoint(host="attacker.example", port=993, tls=TlsMode.IMPLICIT),
                "version": 2,
            }
        )
        await h.publish(ProfileUpdated(profile=moved))

        async def refused() -> bool:
            got = await ask(h, sync, body)
            return got.get("status") == 409 and "changed since the password was entered" in json.dumps(got)

        await eventually(refused, what="the redirected login refused")


async def test_sender_gets_the_incoming_login_only_to_copy_sent_mail_and_only_when_the_profile_says_so(
    make_harness: MakeHarness,
) -> None:
    async with make_harness() as h:
        profile = await h.profile()  # save_sent_copy off (the default)
        assert (await h.http.post("/mailboxes", json=mailbox_body(1, mailbox_id="a"))).status_code == 201
        transit = KeyRing.parse(h.settings.transit_keys.get_secret_value())  # type: ignore[union-attr]
        sync, sender = service_token(transit, "sync-svc"), service_token(transit, "sender-svc")
        copy = {"mailbox_id": "a", "direction": "incoming", "purpose": "sent_copy"}

        off = await ask(h, sender, copy)
        assert off["status"] == 403 and "does not save sent copies" in json.dumps(off), off

        on = profile.model_copy(
            update={"advanced": profile.advanced.model_copy(update={"save_sent_copy": True}), "version": 2}
        )
        await h.publish(ProfileUpdated(profile=on))

        async def granted() -> dict[str, Any] | None:
            got = await ask(h, sender, copy)
            return got if got.get("ok") else None

        got = await eventually(granted, what="the sent_copy login once the profile saves sent copies")
        assert got is not None
        result = got["result"]
        assert (result["host"], result["port"], result["purpose"]) == ("imap.example.com", 993, "sent_copy")
        sealed = SealedSecret.model_validate(result["sealed"])
        where = {"mailbox_id": "a", "direction": "incoming", "host": "imap.example.com", "port": 993}
        plain = json.loads(open_for_use(transit, sealed, purpose="sent_copy", **where))
        assert (plain["username"], plain["password"]) == ("user1", "pw-secret-1")
        for purpose in ("sync", "send"):  # bound to the copy: not a sync (or send) login
            try:
                open_for_use(transit, sealed, purpose=purpose, **where)
            except SealError:
                continue
            raise AssertionError(f"opened for {purpose}")

        # Only for that purpose, only in that direction, only for sender-svc.
        for caller, body, status in (
            (sender, {**copy, "purpose": "sync"}, 403),
            (sender, {**copy, "direction": "outgoing"}, 422),
            (sync, copy, 403),
            (h.token, copy, 403),
        ):
            refused = await ask(h, caller, body)
            assert refused.get("status") == status, (body, refused)
