"""The CLI end to end: the README's quick tour, CSV import, failing tests, refusals and event tails."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import nats
import pytest

if TYPE_CHECKING:  # conftest is not importable under --import-mode=importlib; its fixtures are
    from conftest import Cli, Result, Stack

pytestmark = pytest.mark.integration


async def until_ok(run: Cli, *args: str, what: str, tries: int = 20) -> Result:
    """Repeat a command until it succeeds: mailbox-svc learns new profiles from events, a moment later."""
    for _ in range(tries):
        res = await run(*args)
        if res.code == 0:
            return res
        await asyncio.sleep(0.3)
    raise AssertionError(f"{what} never succeeded:\n{res}")


async def new_profile(stack: Stack, tag: str, owner: str, run: Cli | None = None) -> str:
    res = await (run or stack.cli)(
        "profile", "create", "--name", f"imap {tag}", "--owner-id", owner, "--owner-email", f"{owner}@example.org",
        "--protocol", "imap", "--host", "127.0.0.1", "--port", str(stack.dovecot.imaps_port), "--tls", "implicit",
        "--smtp-host", "127.0.0.1", "--smtp-port", str(stack.smtp.port_starttls), "--smtp-tls", "starttls", "-q",
    )  # fmt: skip
    assert res.code == 0, res
    profile_id: str = res.out.strip()
    return profile_id


async def new_mailbox(
    stack: Stack,
    profile_id: str,
    mailbox_id: str,
    user: str,
    password: str,
    owner: str,
    run: Cli | None = None,
) -> None:
    await until_ok(
        run or stack.cli,
        "mailbox", "add", "--id", mailbox_id, "--email", f"{user}@mail.test", "--owner-id", owner,
        "--profile", profile_id, "--username", user, "--password", password, "-q",
        what="mailbox add",
    )  # fmt: skip


async def test_quick_tour_profile_mailbox_approve_test_alerts(stack: Stack) -> None:
    tag = uuid.uuid4().hex[:8]
    profile_id = await new_profile(stack, tag, f"padmin{tag}")
    await new_mailbox(stack, profile_id, f"mbx{tag}", "alice", "alice-pw", f"owner{tag}")

    res = await stack.cli("mailbox", "approve", f"mbx{tag}")
    assert res.code == 0 and "1 done" in res.out, res

    res = await stack.cli("mailbox", "test", f"mbx{tag}", "--wait", "--wait-timeout", "60")
    assert res.code == 0, res
    assert "results by error code" in res.out and "success" in res.out, res
    assert f"mbx{tag}" in res.out

    listed, shown = await asyncio.gather(
        stack.cli("mailbox", "list", "--profile", profile_id), stack.cli("mailbox", "show", f"mbx{tag}")
    )
    assert listed.code == 0 and f"mbx{tag}" in listed.out and "in/out" in listed.out, listed
    assert shown.code == 0, shown
    assert "incoming (imap): success" in shown.out and "outgoing (smtp): success" in shown.out, shown
    assert "tls" in shown.out and "alice-pw" not in shown.out + shown.err

    # the owner's success alert, replayed from JetStream (or awaited live): exactly our subject
    res = await stack.cli(
        "events", "tail", f"mailwarden.alerts.user.owner{tag}.>", "--last", "1", "-n", "1", "--json"
    )
    assert res.code == 0, res
    line = json.loads(res.out.strip().splitlines()[0])
    assert line["message"]["type"] == "AlertRaised" and line["message"]["data"]["mailbox_id"] == f"mbx{tag}"

    res = await stack.cli("alerts", "list", "--recipient", f"user:owner{tag}")
    assert res.code == 0 and "information" in res.out and f"mbx{tag}" in res.out, res


async def test_failed_test_exits_1_with_code_trace_and_alert(stack: Stack) -> None:
    tag = uuid.uuid4().hex[:8]
    profile_id = await new_profile(stack, tag, f"padmin{tag}", stack.call)
    await new_mailbox(stack, profile_id, f"mbx{tag}", "bob", "not-bobs-password", f"owner{tag}", stack.call)
    assert (await stack.call("mailbox", "approve", f"mbx{tag}")).code == 0

    res = await stack.cli("mailbox", "test", f"mbx{tag}", "--wait", "--wait-timeout", "60")
    assert res.code == 1, res
    assert "auth_failed" in res.out and "results by error code" in res.out, res

    res = await stack.call("mailbox", "show", f"mbx{tag}")
    assert res.code == 0, res
    assert "error auth_failed" in res.out and "remediation:" in res.out, res
    assert "not-bobs-password" not in res.out

    res = await stack.call("alerts", "follow", "--recipient", f"user:padmin{tag}", "--last", "1", "-n", "1")
    assert res.code == 0 and "[error]" in res.out and "auth_failed" in res.out, res

    res = await stack.call("job", "start", profile_id, "--watch", "--wait-timeout", "60", "--json")
    assert res.code == 1, res  # the job ran to its end, and its one mailbox failed
    job = json.loads(res.out)
    assert (job["state"], job["total"], job["done"], job["succeeded"]) == ("completed", 1, 1, 0), job
    assert sum(job["failed"].values()) == 1, job


async def test_csv_import_creates_valid_rows_and_names_bad_ones(stack: Stack, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    profile_id = await new_profile(stack, tag, f"padmin{tag}", stack.call)
    await new_mailbox(
        stack, profile_id, f"probe{tag}", "alice", "alice-pw", f"p{tag}", stack.call
    )  # known now
    csv = tmp_path / "mailboxes.csv"
    csv.write_text(
        "mailbox_id,email,owner_id,profile_id,username,password\n"
        f"a{tag},a{tag}@mail.test,o{tag},{profile_id},alice,alice-pw\n"  # line 2: fine
        f"b{tag},not-an-address,o{tag},{profile_id},,\n"  # line 3: bad email
        f"c{tag},c{tag}@mail.test,o{tag},,,\n"  # line 4: fine, no profile yet
        f"d{tag},d{tag}@mail.test,o{tag},nosuchprofile,,\n"  # line 5: unknown profile
        f"a{tag},again{tag}@mail.test,o{tag},,,\n"  # line 6: id used twice
    )
    res = await stack.cli("mailbox", "import", str(csv), "--json")
    assert res.code == 1, res
    report = json.loads(res.out)
    created = {c["mailbox_id"]: c["row"] for c in report["created"]}
    assert created == {f"a{tag}": 2, f"c{tag}": 4}, report
    errors = {(e["row"], e["field"]) for e in report["errors"]}
    assert errors == {(3, "email"), (5, "profile_id"), (6, "mailbox_id")}, report

    res = await stack.call("mailbox", "list", "--owner-id", f"o{tag}", "--json")
    assert sorted(m["mailbox_id"] for m in json.loads(res.out)["items"]) == [f"a{tag}", f"c{tag}"]


async def test_refused_input_and_unknown_ids_are_one_clear_line_each(stack: Stack) -> None:
    res = await stack.cli("mailbox", "add", "--email", "not-an-address", "--owner-id", "u1")
    assert res.code == 1, res
    lines = res.err.strip().splitlines()
    assert lines[0].startswith("error: refused") and any(
        ln.strip().startswith("email:") for ln in lines[1:]
    ), res

    res = await stack.cli("mailbox", "show", "nosuchmailbox")
    assert res.code == 1, res
    assert res.err.strip() == "error: not found: no such mailbox (mailbox_id nosuchmailbox)", res


async def test_events_tail_prints_live_messages(stack: Stack) -> None:
    subject = f"mailwarden.clitest.{uuid.uuid4().hex[:8]}"
    proc = asyncio.create_task(stack.cli("events", "tail", subject, "-n", "1", "--json"))
    nc = await nats.connect(stack.nats_url)
    try:
        while not proc.done():  # until the tail has subscribed and printed one
            await nc.publish(subject, json.dumps({"type": "Probe", "n": 1}).encode())
            await asyncio.sleep(0.2)
    finally:
        await nc.close()
    res = proc.result()
    assert res.code == 0, res
    assert json.loads(res.out) == {"subject": subject, "message": {"type": "Probe", "n": 1}}
