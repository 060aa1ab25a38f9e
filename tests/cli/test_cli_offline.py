"""What the CLI decides before (or without) any service: usage errors, NATS problems, CSV parsing."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from typer.testing import CliRunner

from mailwarden_cli import csvimport
from mailwarden_cli.main import app
from mailwarden_servers import NatsServer
from mailwarden_servers.ports import free_port

if TYPE_CHECKING:
    from conftest import Cli

runner = CliRunner()
UNUSED_URL = "nats://127.0.0.1:9"  # never contacted: usage errors stop first


@pytest.mark.parametrize(
    "args",
    [
        ["profile", "lisst"],
        ["profile", "create", "--name", "x"],
        ["mailbox", "test"],
        ["mailbox", "approve", "m1", "--all"],
        ["mailbox", "change", "m1"],
        ["settings", "set", "--allowed-ports", "993,abc"],
        ["events", "tail", "mailwarden.>", "--since", "yesterday"],
        ["alerts", "list", "--recipient", "robot:r1"],
        ["profile", "create", "--name", "x", "--owner-id", "u", "--protocol", "smtp", "--host", "h"],
    ],
)
def test_bad_usage_exits_2_before_touching_nats(args: list[str]) -> None:
    result = runner.invoke(app, ["--nats-url", UNUSED_URL, *args])
    assert result.exit_code == 2, result.output


def test_csv_with_an_unknown_column_is_bad_usage(tmp_path: Path) -> None:
    csv = tmp_path / "m.csv"
    csv.write_text("email,owner_id,colour\na@b.test,u1,blue\n")
    result = runner.invoke(app, ["--nats-url", UNUSED_URL, "mailbox", "import", str(csv)])
    assert result.exit_code == 2 and "colour" in result.output


def test_csv_rows_become_requests_with_line_numbers() -> None:
    text = (
        "email,owner_id,owner_kind,username,password,profile_id\n"
        "a@mail.test,u1,,alice,alice-pw,p1\n"
        "\n"
        "b@mail.test,q1,queue,,,\n"
        "c@mail.test,u3,,,,,extra\n"
        "d@mail.test,u4\n"
    )
    rows, errors = csvimport.parse(text)
    assert [(r.line, r.body) for r in rows] == [
        (
            2,
            {
                "email": "a@mail.test",
                "profile_id": "p1",
                "owner": {"kind": "user", "id": "u1", "name": "u1"},
                "credentials": {"username": "alice", "password": "alice-pw"},
            },
        ),
        (4, {"email": "b@mail.test", "owner": {"kind": "queue", "id": "q1", "name": "q1"}}),
    ]
    assert [(e.line, e.field) for e in errors] == [(5, "row"), (6, "row")]


@pytest.fixture
def bare_nats(tmp_path: Path) -> Iterator[NatsServer]:
    """A NATS server on which no service runs."""
    with NatsServer(tmp_path / "nats") as server:
        yield server


async def test_unreachable_nats_is_one_clear_line_and_exit_1(mailwarden: Cli) -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    res = await mailwarden("mailbox", "list", nats_url=url)
    assert res.code == 1, res
    assert res.err.startswith(f"error: cannot reach NATS at {url}: ") and len(res.err.splitlines()) == 1, res
    assert res.out == ""


def test_nats_url_comes_from_the_environment() -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    result = runner.invoke(app, ["profile", "list"], env={"MW_NATS_URL": None, "NATS_URL": url})
    assert result.exit_code == 1 and f"cannot reach NATS at {url}" in result.output


async def test_a_service_that_is_not_running_is_named(mailwarden: Cli, bare_nats: NatsServer) -> None:
    res = await mailwarden("mailbox", "list", nats_url=bare_nats.url)
    assert res.code == 1, res
    assert res.err.strip() == (
        "error: no mailbox-svc is answering on mailwarden.rpc.mailbox-svc.list: is mailbox-svc running?"
    ), res


def test_a_status_event_becomes_one_outcome_with_each_failed_code_once() -> None:
    from contracts.events import MailboxStatusChanged
    from contracts.models import TestError
    from mailwarden_cli.waiting import from_event, summary

    owner = {"kind": "user", "id": "u1", "name": "U"}
    ref = {
        "mailbox_id": "m1",
        "email": "m1@mail.test",
        "owner": owner,
        "profile_id": "p1",
        "profile_owner": owner,
    }
    error = TestError(code="auth_failed", step="auth", transient=False, scope="mailbox", message="rejected")
    failed = MailboxStatusChanged.model_validate(
        {
            "mailbox": ref,
            "test_id": "t1",
            "incoming_status": "failure",
            "outgoing_status": "failure",
            "enabled_incoming": False,
            "enabled_outgoing": False,
            "incoming_error": error,
            "outgoing_error": error,
        }
    )
    outcome = from_event(failed)
    assert (outcome.ok, outcome.codes, outcome.mailbox_id, outcome.test_id) == (
        False,
        ["auth_failed"],
        "m1",
        "t1",
    )
    passed = MailboxStatusChanged.model_validate(
        {
            **failed.model_dump(),
            "incoming_status": "success",
            "outgoing_status": "success",
            "incoming_error": None,
            "outgoing_error": None,
        }
    )
    assert from_event(passed).ok
    counts = summary({"m1": outcome, "m2": from_event(passed)}, {"m3": "mailbox_not_approved"}, ["m4"])
    assert counts == {"auth_failed": 1, "success": 1, "mailbox_not_approved": 1, "still_running": 1}


async def test_a_tail_ends_with_one_line_when_nats_goes_away(mailwarden: Cli, bare_nats: NatsServer) -> None:
    tail = asyncio.create_task(mailwarden("events", "tail", "mailwarden.>", nats_url=bare_nats.url))
    for _ in range(300):  # until the tail is connected (its subscription follows at once)
        if tail.done() or await asyncio.to_thread(_connections, bare_nats) > 0:
            break
        await asyncio.sleep(0.1)
    await asyncio.to_thread(bare_nats.stop)
    res = await tail
    assert res.code == 1, res
    assert res.err.startswith(f"error: lost the connection to NATS at {bare_nats.url}"), res
    assert len(res.err.splitlines()) == 1, res


def _connections(server: NatsServer) -> int:
    with urllib.request.urlopen(f"{server.monitor_url}/connz", timeout=2) as resp:
        count: int = json.load(resp)["num_connections"]
        return count


def test_settings_set_help_reads_at_80_columns() -> None:
    result = CliRunner().invoke(app, ["settings", "set", "--help"], env={"COLUMNS": "80"}, terminal_width=80)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert all(len(line) <= 80 for line in lines), [line for line in lines if len(line) > 80]
    for option in ("--default-profile", "--incoming-delivery", "--approved-queues-only", "--allowed-ports"):
        assert option in result.output  # whole, not cut to "--approved-queue…"


def test_malformed_json_names_line_and_column(tmp_path: Path) -> None:
    bad = tmp_path / "profile.json"
    bad.write_text('{\n  "name": "x",\n  "owner": }\n')
    result = runner.invoke(app, ["--nats-url", UNUSED_URL, "profile", "create", "--name", "x", "--owner-id", "u",
                                 "--protocol", "imap", "--host", "h", "--from-json", str(bad)])  # fmt: skip
    assert result.exit_code == 2
    assert "malformed JSON at line 3 column 12" in " ".join(result.output.split()), result.output


def test_each_refused_field_is_printed_once() -> None:
    from mailwarden_cli.client import FieldProblem, RpcError

    problems = [
        FieldProblem("outgoing.host", "must be the incoming host"),
        FieldProblem("outgoing.tls", "must match"),
    ]
    detail = "; ".join(f"{p.field}: {p.message}" for p in problems)
    lines = RpcError("profile-svc", 422, detail, [*problems, problems[0]]).lines
    assert lines == ["refused", "  outgoing.host: must be the incoming host", "  outgoing.tls: must match"]
    lines = RpcError("mailbox-svc", 422, "invalid request", problems).lines
    assert lines[0] == "refused: invalid request" and len(lines) == 3


def test_alerts_show_what_changed_and_when() -> None:
    from mailwarden_cli.render import alert_change, alert_line

    base = {"level": "error", "code": "auth_failed", "title": "t", "recipient": {"kind": "user", "id": "u"},
            "first_seen": "2026-01-01T10:00:00Z", "last_seen": "2026-01-01T10:05:00Z"}  # fmt: skip
    assert alert_change({**base, "state": "open", "count": 1}) == ("raised", "2026-01-01T10:00:00Z")
    assert alert_change({**base, "state": "open", "count": 3}) == ("updated", "2026-01-01T10:05:00Z")
    resolved = {**base, "state": "resolved", "count": 3, "resolved_at": "2026-01-01T11:00:00Z"}
    assert alert_change(resolved) == ("resolved", "2026-01-01T11:00:00Z")
    assert alert_line(resolved).plain.startswith("[error] resolved 2026-01-01T11:00:00Z user:u auth_failed")
