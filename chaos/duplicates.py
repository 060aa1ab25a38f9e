"""A2: every event published again with its own id, inside the duplicate window and after it.

A real flow first produces one event of every type (profile created, updated and deleted, org
settings, mailbox created/updated/approved, test requested and completed, status changed, alert
raised). Then each event is re-published twice in a row with its original ``Nats-Msg-Id`` (the
second copy is inside the window: the server must drop it), and once more after the window has
passed (the server accepts it: only the consumers' own idempotency protects the data).
Pass: the services' databases are exactly as before and the services publish no new event,
except the tester's result for a re-delivered request, which is de-duplicated downstream.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from pathlib import Path

from bson import json_util

from chaos.harness import Figure, System, private_nats
from chaos.infra import Infra, direct_target
from mailwarden_runtime.changes import POSITIONS
from mailwarden_servers import eventually

WINDOW_S = 1.0
PURGE_SLACK_S = 0.5  # nats-server forgets ids on a purge timer: a little past the window
REPLAYED_STREAMS = ("MW_CONFIG", "MW_TESTS", "MW_ALERTS")


async def snapshot(system: System) -> dict[str, str]:
    """Every document of every service database, as canonical extended JSON."""
    out: dict[str, str] = {}
    for service in ("profile-svc", "mailbox-svc", "alert-svc"):
        db = system.db(service)
        for coll in await db.list_collection_names():
            if coll == POSITIONS:
                continue  # the event relay's read position: it follows the oplog, not our data
            async for doc in db[coll].find({}):
                out[f"{service}/{coll}/{doc['_id']}"] = json_util.dumps(doc, sort_keys=True)
    return out


def diff(before: dict[str, str], after: dict[str, str]) -> list[str]:
    changes = [f"new {k}" for k in after.keys() - before.keys()]
    changes += [f"gone {k}" for k in before.keys() - after.keys()]
    for key in before.keys() & after.keys():
        if before[key] != after[key]:
            old, new = json_util.loads(before[key]), json_util.loads(after[key])
            fields = sorted(f for f in old.keys() | new.keys() if old.get(f) != new.get(f))
            changes.append(f"changed {key}: {fields}")
    return sorted(changes)


async def _flow(system: System, infra: Infra, mailboxes: int) -> None:
    """One of every event, from the services themselves."""
    tag = uuid.uuid4().hex[:6]
    target = direct_target(infra)
    await system.allow_ports(infra.mail_ports)
    profile_id = await system.create_profile(target, tag)
    profiles = system.http("profile-svc")
    resp = await profiles.patch(f"/profiles/{profile_id}", json={"description": "changed"})
    assert resp.status_code == 200, resp.text
    spare = await system.create_profile(target, tag + "b")
    resp = await profiles.delete(f"/profiles/{spare}")
    assert resp.status_code == 200, resp.text
    ids = await system.create_mailboxes(profile_id, mailboxes, tag, target.user, target.password)
    resp = await system.http("mailbox-svc").post("/mailboxes/test", json={"mailbox_ids": ids})
    assert resp.status_code == 202, resp.text
    await system.wait_tested(profile_id, mailboxes, 60 + mailboxes)

    async def alerted() -> bool:
        alerts = system.db("alert-svc").alerts
        return bool(await alerts.count_documents({"mailbox_id": {"$in": ids}}) >= mailboxes)

    await eventually(alerted, "the success alert", 30)


async def duplicate_events(infra: Infra, workdir: Path, *, mailboxes: int = 1) -> Figure:
    fig = Figure("A2 duplicate events")
    env = {"MW_DEDUPE_WINDOW_S": str(WINDOW_S)}
    async with (
        private_nats(workdir / "nats") as nats_server,
        System(workdir, nats_server.url, infra.mongo_uri, infra.certs, env=env) as system,
    ):
        await _flow(system, infra, mailboxes)
        await system.wait_quiet(30)
        await asyncio.sleep(2)  # let background workers (outbox relay, channels) settle
        await system.wait_quiet(30)
        js = system.nc.jetstream()
        originals: list[tuple[str, bytes]] = []
        for stream in REPLAYED_STREAMS:
            originals += await system.stream_messages(stream)
        types = Counter(json.loads(body)["type"] for _, body in originals)
        before = await snapshot(system)
        counts_before = {s: (await js.stream_info(s)).state.messages for s in REPLAYED_STREAMS}
        await asyncio.sleep(WINDOW_S + PURGE_SLACK_S)  # the originals are now outside the window

        dropped = accepted_first = 0
        refused_subjects: Counter[str] = Counter()  # copies after the window the server dropped
        refused: Counter[str] = Counter()  # the same, per event id
        ours_accepted: Counter[str] = Counter()
        for subject, body in originals:
            msg_id = str(json.loads(body)["id"])
            first = await js.publish(subject, body, headers={"Nats-Msg-Id": msg_id})
            second = await js.publish(subject, body, headers={"Nats-Msg-Id": msg_id})
            accepted_first += int(not first.duplicate)
            ours_accepted[msg_id] += int(not first.duplicate)
            if first.duplicate:
                refused_subjects[subject] += 1
                refused[msg_id] += 1
            dropped += int(second.duplicate)
        await asyncio.sleep(WINDOW_S + PURGE_SLACK_S)
        accepted_late = 0
        for subject, body in originals:
            msg_id = str(json.loads(body)["id"])
            late = await js.publish(subject, body, headers={"Nats-Msg-Id": msg_id})
            accepted_late += int(not late.duplicate)
            ours_accepted[msg_id] += int(not late.duplicate)
            if late.duplicate:
                refused_subjects[subject] += 1
                refused[msg_id] += 1
        started = time.monotonic()
        await system.wait_quiet(60)
        await asyncio.sleep(2)
        await system.wait_quiet(60)
        after = await snapshot(system)
        changes = diff(before, after)

        replayed = 3 * len(originals)
        new_events: Counter[str] = Counter()
        copies_of_id: Counter[str] = Counter()
        for stream in REPLAYED_STREAMS:
            msgs = await system.stream_messages(stream)
            for _, body in msgs[counts_before[stream] :]:
                doc = json.loads(body)
                new_events[f"{doc['producer']}:{doc['type']}"] += 1
                copies_of_id[str(doc["id"])] += 1
        # A copy after the window is rightly dropped when a service had just published the same event
        # again: a tester answering a replayed TestRequested publishes its TestCompleted under the
        # same id, often before our copy of it. The stream then holds more copies of that id than
        # we got accepted. Any other dropped copy after the window is a failure.
        explained = sum(n for i, n in refused.items() if copies_of_id[i] > ours_accepted[i])
        # What we published ourselves: 2 accepted copies of each original.
        ours = Counter[str]()
        for _, body in originals:
            doc = json.loads(body)
            ours[f"{doc['producer']}:{doc['type']}"] += 2
        extra = {k: v - ours[k] for k, v in new_events.items() if v - ours[k] > 0}
        tester_results = extra.pop("tester-svc:TestCompleted", 0)

        fig.figures["event_types"] = len(types)
        fig.figures["events"] = len(originals)
        fig.figures["copies_published"] = replayed
        fig.figures["dropped_inside_window"] = f"{dropped}/{len(originals)}"
        fig.figures["accepted_after_window"] = f"{accepted_first + accepted_late}/{2 * len(originals)}"
        if refused_subjects:
            fig.figures["dropped_after_window_by_subject"] = dict(refused_subjects.most_common(5))
            fig.figures["dropped_after_a_service_republish"] = explained
        fig.figures["db_changes"] = len(changes)
        fig.figures["new_service_events"] = sum(extra.values())
        fig.figures["tester_reruns"] = tester_results
        fig.figures["seconds"] = round(time.monotonic() - started, 1)
        wanted = {
            "ProfileCreated", "ProfileUpdated", "ProfileDeleted", "EmailSettingsChanged", "MailboxCreated",
            "MailboxUpdated", "MailboxApproved", "TestRequested", "TestCompleted", "MailboxStatusChanged",
            "AlertRaised",
        }  # fmt: skip
        fig.check(wanted <= set(types), f"event types missing from the flow: {wanted - set(types)}")
        fig.check(dropped == len(originals), "the server accepted a copy inside the duplicate window")
        fig.check(
            accepted_first + accepted_late + explained == 2 * len(originals),
            "copies after the window were dropped",
        )
        fig.check(not changes, f"duplicates changed stored data: {changes[:8]}")
        fig.check(not extra, f"duplicates made services publish: {extra}")
    return fig
