"""CRUD, validation and the bulk operations of mailbox-svc, over HTTP and NATS request-reply."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from mailbox_helpers import MakeHarness, mailbox_body, owner, profile_snapshot

from contracts.models import ACT_NOT_SUPPORTED, OwnerKind
from mailbox_svc.store.mailboxes import EPOCH, MailboxWrite


async def test_create_read_list_update_deactivate(make_harness: MakeHarness) -> None:
    async with make_harness() as h:
        await h.profile()
        r = await h.http.post("/mailboxes", json=mailbox_body(1, mailbox_id="mb1"))
        assert r.status_code == 201, r.text
        mb = r.json()
        assert mb["mailbox_id"] == "mb1"
        assert mb["credentials"] == {
            "username": "user1",
            "has_password": True,
            "password_updated_at": mb["credentials"]["password_updated_at"],
        }
        assert mb["approval"] == "pending"
        assert (mb["incoming_status"], mb["outgoing_status"], mb["act_status"]) == (
            "not_run",
            "not_run",
            "not_applicable",
        )
        assert mb["enabled_incoming"] is False and mb["outgoing_credentials"] is None

        q = mailbox_body(2, mailbox_id="mb2", owner=owner(OwnerKind.QUEUE, "q1"), profile_id=None)
        assert (await h.http.post("/mailboxes", json=q)).status_code == 201
        assert (await h.http.post("/mailboxes", json=mailbox_body(3, mailbox_id="mb3"))).status_code == 201
        dup = await h.http.post("/mailboxes", json=mailbox_body(1, mailbox_id="mb1"))
        assert dup.status_code == 409

        page = (await h.http.get("/mailboxes", params={"profile_id": "prof1", "limit": 1})).json()
        assert [m["mailbox_id"] for m in page["items"]] == ["mb1"] and page["next_after"] == "mb1"
        page2 = (await h.http.get("/mailboxes", params={"profile_id": "prof1", "after": "mb1"})).json()
        assert [m["mailbox_id"] for m in page2["items"]] == ["mb3"] and page2["next_after"] is None
        queues = (await h.http.get("/mailboxes", params={"owner_kind": "queue"})).json()
        assert [m["mailbox_id"] for m in queues["items"]] == ["mb2"]
        pending = (
            await h.http.get("/mailboxes", params={"approval": "pending", "incoming_status": "not_run"})
        ).json()
        assert len(pending["items"]) == 3

        before = mb["credentials"]["password_updated_at"]
        r = await h.http.patch(
            "/mailboxes/mb1", json={"credentials": {"username": "renamed"}, "act_delivery": "none"}
        )
        assert r.status_code == 200, r.text
        assert r.json()["credentials"]["username"] == "renamed"
        assert r.json()["credentials"]["has_password"] is True
        assert r.json()["credentials"]["password_updated_at"] == before  # omitted password kept
        assert r.json()["version"] == 2
        r = await h.http.patch(
            "/mailboxes/mb1", json={"outgoing_credentials": {"username": "o", "password": "p2"}}
        )
        assert r.json()["outgoing_credentials"]["has_password"] is True

        r = await h.http.post("/mailboxes/mb1/deactivate")
        assert r.status_code == 200 and r.json()["active"] is False
        active = (await h.http.get("/mailboxes", params={"profile_id": "prof1"})).json()
        assert [m["mailbox_id"] for m in active["items"]] == ["mb3"]
        assert (await h.http.get("/mailboxes/nope")).status_code == 404

        # The same operations over NATS request-reply.
        got = await h.rpc("get", {"mailbox_id": "mb3"})
        assert got["ok"] is True and got["result"]["email"] == "user3@example.com"
        upd = await h.rpc("update", {"mailbox_id": "mb3", "changes": {"email": "new3@example.com"}})
        assert upd["ok"] is True and upd["result"]["email"] == "new3@example.com"
        bad = await h.rpc("create", {"email": "x"})
        assert bad["ok"] is False and bad["status"] == 422
        assert {e["field"] for e in bad["errors"]} >= {"email", "owner"}

        events = await h.stream_messages("mailwarden.mailbox.")
        types = [e["data"]["type"] for e in events]
        assert types.count("MailboxCreated") == 3 and "MailboxUpdated" in types


async def test_bad_input_is_422_with_the_field_and_stores_nothing(make_harness: MakeHarness) -> None:
    async with make_harness() as h:
        await h.profile()
        cases: list[tuple[dict[str, Any], str]] = [
            ({**mailbox_body(1), "email": "not-an-address"}, "email"),
            ({**mailbox_body(1), "profile_id": "nope"}, "profile_id"),
            ({**mailbox_body(1), "credentials": {"username": "u", "password": ""}}, "credentials.password"),
            ({**mailbox_body(1), "incoming_delivery": "carrier-pigeon"}, "incoming_delivery"),
            ({**mailbox_body(1), "surprise": 1}, "surprise"),
            ({**mailbox_body(1), "owner": {"kind": "robot", "id": "r", "name": "R"}}, "owner.kind"),
        ]
        for body, field in cases:
            r = await h.http.post("/mailboxes", json=body)
            assert r.status_code == 422, (field, r.text)
            assert field in {e["field"] for e in r.json()["errors"]}, (field, r.json())
            assert "pw-secret-1" not in r.text
        r = await h.http.post(
            "/mailboxes/batch", json={"mailboxes": [mailbox_body(1), {**mailbox_body(2), "email": "bad"}]}
        )
        assert r.status_code == 422 and "mailboxes.1.email" in {e["field"] for e in r.json()["errors"]}
        assert await h.db.mailboxes.count_documents({}) == 0
        r = await h.http.post("/mailboxes", json=mailbox_body(1, mailbox_id="m1"))
        assert r.status_code == 201
        r = await h.http.patch("/mailboxes/m1", json={"email": None})
        assert r.status_code == 422 and r.json()["errors"]
        r = await h.http.patch("/mailboxes/m1", json={"profile_id": "ghost"})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "profile_id"
        r = await h.http.post("/mailboxes/approve", json={"mailbox_ids": ["m1"], "filter": {}})
        assert r.status_code == 422
        doc = await h.db.mailboxes.find_one({"_id": "m1"})
        assert doc["version"] == 1 and doc["approval"] == "pending"


async def test_approve_reject_change_many_and_apply_defaults(make_harness: MakeHarness) -> None:
    async with make_harness() as h:
        await h.profile()
        await h.profile(profile_snapshot("prof2"))
        r = await h.http.post(
            "/mailboxes/batch",
            json={"mailboxes": [mailbox_body(i, mailbox_id=f"m{i}", profile_id=None) for i in range(1, 5)]},
        )
        assert r.status_code == 201, r.text

        r = await h.http.post("/mailboxes/approve", json={"mailbox_ids": ["m1", "m2"]})
        assert r.json()["done"] == ["m1", "m2"]
        r = await h.http.post("/mailboxes/approve", json={"mailbox_ids": ["m1"]})
        assert r.json()["done"] == []  # already approved: no second event
        r = await h.http.post("/mailboxes/reject", json={"filter": {"approval": "pending"}})
        assert sorted(r.json()["done"]) == ["m3", "m4"]
        approved = await h.stream_messages("mailwarden.mailbox.approved")
        assert sorted(e["data"]["data"]["mailbox_id"] for e in approved) == ["m1", "m2"]

        r = await h.http.post(
            "/mailboxes/change",
            json={
                "selection": {"mailbox_ids": ["m1", "m2"]},
                "changes": {"profile_id": "prof2", "act_delivery": "none", "outgoing_delivery": "none"},
            },
        )
        assert r.status_code == 200 and r.json()["done"] == ["m1", "m2"]
        m1 = await h.mailbox("m1")
        assert (m1["profile_id"], m1["outgoing_delivery"]) == ("prof2", "none")
        bad = await h.http.post(
            "/mailboxes/change", json={"selection": {"mailbox_ids": ["m1"]}, "changes": {}}
        )
        assert bad.status_code == 422

        # No default profile yet: refused, nothing changed.
        r = await h.http.post("/mailboxes/apply-default-settings", json={"mailbox_ids": ["m3"]})
        assert r.status_code == 409
        await h.org_settings(default_profile_id="prof1", act_delivery="none", approved_users_only=False)
        r = await h.http.post("/mailboxes/apply-default-settings", json={"mailbox_ids": ["m3", "m4"]})
        assert r.status_code == 202, r.text
        assert r.json()["done"] == ["m3", "m4"]
        reqs = {q.mailbox.mailbox_id: q for q in await h.test_requests(2)}
        assert set(reqs) == {"m3", "m4"} and reqs["m3"].target.profile_id == "prof1"
        m3 = await h.mailbox("m3")
        assert (m3["profile_id"], m3["incoming_delivery"], m3["test_scheduled"]) == (
            "prof1",
            "server_side_sync",
            True,
        )
        assert m3["pending_test_id"] == r.json()["test_ids"]["m3"]
        await h.complete(reqs["m3"])
        m3 = await h.wait_mailbox("m3", lambda m: m["incoming_status"] == "success")
        # users need no approval in this org, but m3 was rejected: it stays off
        assert not m3["enabled_incoming"] and m3["disabled_reason"] == "mailbox_not_approved"


async def test_profile_read_model_follows_updates_and_deletes(make_harness: MakeHarness) -> None:
    async with make_harness() as h:
        await h.profile()
        await h.http.post("/mailboxes", json=mailbox_body(1, mailbox_id="m1"))
        from contracts.events import ProfileDeleted, ProfileUpdated
        from mailwarden_servers import eventually

        newer = profile_snapshot(version=3)
        await h.publish(ProfileUpdated(profile=newer.model_copy(update={"name": "renamed"})))
        await h.publish(ProfileUpdated(profile=profile_snapshot(version=2)))  # late and older: ignored

        async def renamed() -> bool:
            doc = await h.db.profiles.find_one({"_id": "prof1"})
            return bool(doc and doc["snapshot"]["name"] == "renamed")

        await eventually(renamed, what="profile update")
        await h.http.post("/mailboxes/m1/test")
        (req,) = await h.test_requests(1)
        assert req.target.profile_name == "renamed"
        await h.publish(ProfileDeleted(profile_id="prof1"))

        async def deleted() -> bool:
            doc = await h.db.profiles.find_one({"_id": "prof1"})
            return bool(doc and doc.get("deleted"))

        await eventually(deleted, what="profile deletion")
        r = await h.http.post("/mailboxes/m1/test")
        assert r.status_code == 409 and r.json()["errors"][0]["field"] == "profile_id"
        job = await h.rpc("job_start", {"profile_id": "prof1"})
        assert job["ok"] is False and job["status"] == 422


async def test_act_server_side_sync_is_refused_on_mailboxes_of_imap_and_pop3_profiles(
    make_harness: MakeHarness,
) -> None:
    """As the org settings refuse it: on create, PATCH, change many and apply defaults."""
    async with make_harness() as h:
        await h.profile()
        sync = {"act_delivery": "server_side_sync"}
        r = await h.http.post("/mailboxes", json=mailbox_body(1, mailbox_id="a1", **sync))
        assert r.status_code == 422, r.text
        assert r.json()["errors"] == [{"field": "act_delivery", "message": ACT_NOT_SUPPORTED}]
        assert (await h.http.get("/mailboxes/a1")).status_code == 404
        r = await h.http.post(
            "/mailboxes/batch", json={"mailboxes": [mailbox_body(2, mailbox_id="a2", **sync)]}
        )
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "mailboxes.0.act_delivery"

        # Without a profile nothing says the server is IMAP or POP3; giving it one then refuses.
        free = mailbox_body(3, mailbox_id="a3", profile_id=None, **sync)
        assert (await h.http.post("/mailboxes", json=free)).status_code == 201
        r = await h.http.patch("/mailboxes/a3", json={"profile_id": "prof1"})
        assert r.status_code == 422 and r.json()["errors"][0]["message"] == ACT_NOT_SUPPORTED

        assert (await h.http.post("/mailboxes", json=mailbox_body(4, mailbox_id="a4"))).status_code == 201
        r = await h.http.patch("/mailboxes/a4", json=sync)
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "act_delivery"
        r = await h.rpc("update", {"mailbox_id": "a4", "changes": sync})
        assert r["ok"] is False and r["status"] == 422 and r["errors"][0]["message"] == ACT_NOT_SUPPORTED

        r = await h.http.post(
            "/mailboxes/change", json={"selection": {"mailbox_ids": ["a4"]}, "changes": sync}
        )
        assert r.status_code == 200, r.text
        assert r.json()["done"] == []
        assert r.json()["refused"] == [
            {"mailbox_id": "a4", "code": "act_not_supported", "message": ACT_NOT_SUPPORTED}
        ]
        assert (await h.mailbox("a4"))["act_delivery"] == "none"

        # Org settings published by an older profile-svc (or written elsewhere) are not trusted either.
        await h.org_settings(default_profile_id="prof1", act_delivery="server_side_sync")
        r = await h.http.post("/mailboxes/apply-default-settings", json={"mailbox_ids": ["a4"]})
        assert r.status_code == 202, r.text
        assert [x["code"] for x in r.json()["refused"]] == ["act_not_supported"]
        assert (await h.mailbox("a4"))["act_delivery"] == "none"


async def test_an_empty_filter_needs_all_true(make_harness: MakeHarness) -> None:
    """``{"filter": {}}`` would select every mailbox: refused (422) unless ``all: true`` says so."""
    async with make_harness() as h:
        await h.profile()
        for n in (1, 2):
            assert (
                await h.http.post("/mailboxes", json=mailbox_body(n, mailbox_id=f"e{n}"))
            ).status_code == 201
        for path in (
            "/mailboxes/test",
            "/mailboxes/approve",
            "/mailboxes/reject",
            "/mailboxes/apply-default-settings",
        ):
            r = await h.http.post(path, json={"filter": {}})
            assert r.status_code == 422 and r.json()["errors"][0]["field"] == "filter", (path, r.text)
        r = await h.http.post(
            "/mailboxes/change", json={"selection": {"filter": {}}, "changes": {"act_delivery": "none"}}
        )
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "selection.filter", r.text
        r = await h.rpc("approve", {"filter": {}})
        assert r["ok"] is False and r["status"] == 422
        r = await h.http.post("/mailboxes/approve", json={"all": True, "mailbox_ids": ["e1"]})
        assert r.status_code == 422
        assert (await h.mailbox("e1"))["approval"] == "pending"

        r = await h.http.post("/mailboxes/approve", json={"all": True})
        assert r.status_code == 200 and sorted(r.json()["done"]) == ["e1", "e2"], r.text
        r = await h.http.post("/mailboxes/reject", json={"all": True, "filter": {}})
        assert r.status_code == 200 and sorted(r.json()["done"]) == ["e1", "e2"], r.text
        r = await h.http.post("/mailboxes/approve", json={"filter": {"profile_id": "prof1"}})
        assert r.status_code == 200 and sorted(r.json()["done"]) == ["e1", "e2"], r.text


async def test_approve_writes_a_batch_at_once_and_redoes_what_lost_a_race(make_harness: MakeHarness) -> None:
    """Approval is one read and one bulk write; a mailbox changed meanwhile is approved alone after."""
    async with make_harness() as h:
        await h.profile()
        bodies = [mailbox_body(i, mailbox_id=f"b{i}", profile_id=None) for i in range(1, 6)]
        assert (await h.http.post("/mailboxes/batch", json={"mailboxes": bodies})).status_code == 201
        mailboxes = h.app.state.operations.mailboxes
        bulk_update = mailboxes.bulk_update

        async def racing(writes: Sequence[MailboxWrite]) -> int:
            # another writer changes b2 between the read and the bulk write
            await h.db["mailboxes"].update_one({"_id": "b2"}, {"$inc": {"version": 1}})
            return int(await bulk_update(writes))

        mailboxes.bulk_update = racing
        try:
            r = await h.http.post(
                "/mailboxes/approve", json={"mailbox_ids": ["b1", "b2", "nope", "b3", "b1"]}
            )
        finally:
            mailboxes.bulk_update = bulk_update
        assert r.status_code == 200, r.text
        assert sorted(r.json()["done"]) == ["b1", "b2", "b3"]
        assert [(x["mailbox_id"], x["code"]) for x in r.json()["refused"]] == [("nope", "404")]
        for mailbox_id in ("b1", "b2", "b3"):
            assert (await h.mailbox(mailbox_id))["approval"] == "approved"
        assert (await h.mailbox("b4"))["approval"] == "pending"
        versions = {d["_id"]: d["version"] async for d in h.db["mailboxes"].find({}, {"version": 1})}
        assert versions["b2"] == versions["b1"] + 1  # the race happened, and b2 was approved after it
        approved = await h.stream_messages("mailwarden.mailbox.approved")
        assert sorted(e["data"]["data"]["mailbox_id"] for e in approved) == ["b1", "b2", "b3"]


async def test_create_many_approved_is_one_insert_each_with_its_approval(make_harness: MakeHarness) -> None:
    async with make_harness() as h:
        await h.profile()
        bodies = [mailbox_body(i, mailbox_id=f"c{i}", profile_id=None) for i in range(1, 4)]
        r = await h.http.post("/mailboxes/batch", json={"mailboxes": bodies, "approve": True})
        assert r.status_code == 201 and r.json()["done"] == ["c1", "c2", "c3"], r.text
        for mailbox_id in ("c1", "c2", "c3"):
            assert (await h.mailbox(mailbox_id))["approval"] == "approved"
        assert {d["version"] async for d in h.db["mailboxes"].find({}, {"version": 1})} == {
            1
        }  # never updated
        approved = await h.stream_messages("mailwarden.mailbox.approved")
        assert sorted(e["data"]["data"]["mailbox_id"] for e in approved) == ["c1", "c2", "c3"]
        created = await h.stream_messages("mailwarden.mailbox.created")
        assert {e["data"]["data"]["mailbox"]["approval"] for e in created} == {"approved"}
        # a refused batch writes nothing, approved or not
        r = await h.http.post(
            "/mailboxes/batch", json={"mailboxes": [*bodies[:1], bodies[0]], "approve": True}
        )
        assert r.status_code == 422 and await h.db["mailboxes"].count_documents({}) == 3


async def test_no_index_on_the_pending_test_or_the_statuses_and_old_ones_are_dropped(
    make_harness: MakeHarness,
) -> None:
    """No query finds a mailbox by its pending test alone, and the status filters are not selective:
    their indexes only cost every insert and every test's update."""
    async with make_harness() as h:
        mailboxes = h.db["mailboxes"]
        await mailboxes.drop_index("approval_pending")
        await mailboxes.drop_index("next_retry_at_due")
        for old in ("pending_test_id", "incoming_status", "outgoing_status", "approval"):
            await mailboxes.create_index(old)  # as an older version left them
        await mailboxes.create_index("next_retry_at", sparse=True)
    async with make_harness() as h:  # the same database, started again
        indexes = await h.db["mailboxes"].index_information()
        assert set(indexes) == {"_id_", "profile_id_1", "owner.id_1", "approval_pending", "next_retry_at_due"}
        assert indexes["approval_pending"]["partialFilterExpression"] == {"approval": "pending"}
        await h.profile()
        body = mailbox_body(1, mailbox_id="f1", profile_id=None)
        assert (await h.http.post("/mailboxes", json=body)).status_code == 201
        page = await h.http.get("/mailboxes", params={"incoming_status": "not_run"})
        assert [m["mailbox_id"] for m in page.json()["items"]] == ["f1"], "still filtered, by a scan"


def _index_used(plan: dict[str, Any]) -> str | None:
    """The index an explained query's winning plan scans (None: a collection scan)."""
    stage: dict[str, Any] | None = plan["queryPlanner"]["winningPlan"]
    while stage is not None:
        if stage.get("stage") == "IXSCAN":
            return str(stage["indexName"])
        stage = stage.get("inputStage")
    return None


async def test_the_pending_approvals_and_due_retries_are_found_through_their_partial_indexes(
    make_harness: MakeHarness,
) -> None:
    """Only mailboxes waiting for approval, and those with a retry or watchdog time, have an index
    entry; their searches (as the repository sends them) still use those indexes and find them."""
    async with make_harness() as h:
        await h.profile()
        await h.org_settings(approved_users_only=False)
        bodies = [mailbox_body(n, mailbox_id=f"p{n}") for n in range(1, 5)]
        assert (await h.http.post("/mailboxes/batch", json={"mailboxes": bodies[:2]})).status_code == 201
        r = await h.http.post("/mailboxes/batch", json={"mailboxes": bodies[2:], "approve": True})
        assert r.status_code == 201
        mailboxes = h.app.state.stores.mailboxes
        due = datetime.now(UTC) - timedelta(seconds=1)
        await h.db["mailboxes"].update_one({"_id": "p3"}, {"$set": {"next_retry_at": due}})

        page = await h.http.get("/mailboxes", params={"approval": "pending"})
        assert [m["mailbox_id"] for m in page.json()["items"]] == ["p1", "p2"]
        assert [d.id for d in await mailboxes.due_retries(datetime.now(UTC), 10)] == ["p3"]

        pending = h.db["mailboxes"].find({"approval": "pending"}, {"outbox": 0}).sort("_id", 1).limit(50)
        assert _index_used(await pending.explain()) == "approval_pending"
        retries = h.db["mailboxes"].find({"next_retry_at": {"$gte": EPOCH, "$lte": datetime.now(UTC)}})
        assert _index_used(await retries.sort("next_retry_at", 1).limit(10).explain()) == "next_retry_at_due"
