"""Every request the CLI sends names a declared operation of that service, with a valid input, and
every reply field it reads is a field the declarations (or the events it watches) answer.

The CLI is run in process (Typer's CliRunner) on a real NATS connection, with ``Bus.call``
recording each request instead of sending it; each one is then checked against the service's
declarations (``<pkg>.api.OPERATIONS``). The operations named in the CLI's source must all be among
those recorded, so a new call site without an invocation here fails the test.
"""

from __future__ import annotations

import ast
import json
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError
from typer.testing import CliRunner

import mailwarden_cli
from alert_svc.api import OPERATIONS as ALERT_OPERATIONS
from contracts.envelope import Envelope
from contracts.events import EVENT_TYPES
from mailbox_svc.api import OPERATIONS as MAILBOX_OPERATIONS
from mailwarden_cli.client import Bus, RpcError
from mailwarden_cli.main import app
from mailwarden_runtime.http import Problem
from mailwarden_runtime.operations import Operation
from profile_svc.api import OPERATIONS as PROFILE_OPERATIONS
from profile_svc.models import SettingsView
from sender_svc.api import OPERATIONS as SENDER_OPERATIONS
from sync_svc.api import OPERATIONS as SYNC_OPERATIONS

DECLARED: dict[str, dict[str, Operation[Any, Any]]] = {
    "profile-svc": {op.name: op for op in PROFILE_OPERATIONS},
    "mailbox-svc": {op.name: op for op in MAILBOX_OPERATIONS},
    "alert-svc": {op.name: op for op in ALERT_OPERATIONS},
    "sender-svc": {op.name: op for op in SENDER_OPERATIONS},
    "sync-svc": {op.name: op for op in SYNC_OPERATIONS},
}
SOURCE = Path(mailwarden_cli.__file__).parent
ALERT_ID = "0b9f6c2e-7d1a-4c3b-9e8f-1a2b3c4d5e6f"

INVOCATIONS: list[list[str]] = [
    ["profile", "create", "--name", "P", "--owner-id", "it", "--owner-email", "it@example.org",
     "--protocol", "imap", "--host", "imap.example.org", "--port", "993", "--tls", "implicit",
     "--smtp-host", "smtp.example.org", "--smtp-port", "587", "--smtp-tls", "starttls",
     "--credential-source", "profile", "--username", "u", "--password", "p", "--default",
     "--no-verify-tls", "--tls-exception", "a lab server with a self-signed certificate",
     "--connect-timeout", "5", "--max-connections", "3"],
    ["profile", "list", "--json"],
    ["profile", "show", "p1"],
    ["profile", "update", "p1", "--name", "Q", "--port", "143", "--tls", "starttls", "--owner-id", "ops",
     "--owner-kind", "queue", "--username", "u2", "--password", "new", "--not-default", "--allow-plaintext-auth"],
    ["profile", "delete", "p1"],
    ["settings", "show"],
    ["settings", "set", "--default-profile", "p1", "--allowed-ports", "993,587", "--retest-interval-s", "3600"],
    ["mailbox", "add", "--id", "m1", "--email", "m1@example.org", "--owner-id", "m1", "--profile", "p1",
     "--username", "m1", "--password", "pw", "--smtp-username", "m1s", "--smtp-password", "pw2",
     "--incoming-delivery", "server_side_sync", "--act-delivery", "none"],
    ["mailbox", "import", "{csv}"],
    ["mailbox", "list", "--profile", "p1", "--approval", "approved", "--enabled", "--owner-kind", "user",
     "--include-inactive", "--limit", "5", "--after", "m0"],
    ["mailbox", "show", "m1", "--runs", "3"],
    ["mailbox", "update", "m1", "--email", "n@example.org", "--profile", "p2", "--password", "pw"],
    ["mailbox", "deactivate", "m1"],
    ["mailbox", "approve", "m1", "m2"],
    ["mailbox", "reject", "--profile", "p1"],
    ["mailbox", "apply-defaults", "--approval", "approved"],
    ["mailbox", "change", "--all", "--set-profile", "p2", "--outgoing-delivery", "none"],
    ["mailbox", "test", "m1"],
    ["mailbox", "rotate-keys"],
    ["job", "start", "p1"],
    ["job", "show", "j1"],
    ["job", "cancel", "j1"],
    ["alerts", "list", "--recipient", "user:u42", "--level", "error", "--unread", "--state", "open",
     "--limit", "10"],
    ["alerts", "show", ALERT_ID],
    ["alerts", "read", ALERT_ID, "--unread"],
    ["alerts", "delete", ALERT_ID],
    ["alerts", "delete", "--recipient", "queue:q1"],
    ["mail", "send", "m1", "--to", "Ann Example <ann@example.org>", "--cc", "b@example.org", "--bcc",
     "c@example.org", "--subject", "Grüße", "--text", "hi", "--html-file", "{html}", "--attach", "{csv}",
     "--header", "X-Crm-Case: 7", "--in-reply-to", "<a@example.org>", "--key", "k1"],
    ["mail", "status", "m1", "k1"],
    ["sync", "status", "m1"],
    ["sync", "pause", "m1"],
    ["sync", "resume", "m1"],
    ["sync", "resync", "m1", "--from", "2026-11-01"],
    ["token", "create", "crm", "--roles", "integration", "--mailboxes", "m1,m2", "--ttl-days", "30", "--json"],
    ["token", "list", "--json"],
    ["token", "revoke", "0123456789abcdef", "--json"],
    ["audit", "--actor", "token:admin", "--since-hours", "24", "--json"],
]  # fmt: skip
CSV = "mailbox_id,email,owner_id,profile_id,username,password\nc1,c1@example.org,c1,p1,c1,pw\n"


def named_in_source() -> set[tuple[str, str]]:
    """``(service, operation)`` of every ``bus.call(SERVICE, "<op>", ...)`` in the CLI's code."""
    found: set[tuple[str, str]] = set()
    for path in SOURCE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        constants = {
            t.id: n.value.value
            for n in tree.body
            if isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant)
            for t in n.targets
            if isinstance(t, ast.Name)
        }
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if node.func.attr != "call" or len(node.args) < 2:
                continue
            service, operation = node.args[0], node.args[1]
            if isinstance(service, ast.Name) and isinstance(operation, ast.Constant):
                found.add((str(constants[service.id]), str(operation.value)))
    return found


def record(nats_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, Any]]:
    calls: list[tuple[str, str, Any]] = []
    settings = SettingsView().model_dump(mode="json")

    async def call(self: Bus, service: str, operation: str, payload: Mapping[str, Any] | None = None) -> Any:
        sent = json.loads(json.dumps(dict(payload or {}), default=str))  # as the client encodes it
        calls.append((service, operation, sent))
        if operation == "settings_get":
            return settings
        if operation == "create_many":  # refused as a whole: the importer retries row by row
            raise RpcError(service, 422, "refused", [], payload)
        return {}

    monkeypatch.setattr(Bus, "call", call)
    csv = tmp_path / "mailboxes.csv"
    csv.write_text(CSV)
    runner = CliRunner()
    for args in INVOCATIONS:
        html = tmp_path / "body.html"
        html.write_text("<p>hi</p>")
        args = [str(csv) if a == "{csv}" else str(html) if a == "{html}" else a for a in args]
        result = runner.invoke(app, ["--nats-url", nats_url, *args], env={"COLUMNS": "250"})
        assert result.exit_code != 2, f"{args}: usage error\n{result.output}"
    return calls


@pytest.mark.integration
def test_every_cli_request_is_a_declared_operation_with_a_valid_input(
    nats_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = record(nats_url, tmp_path, monkeypatch)
    problems = []
    for service, operation, payload in calls:
        op = DECLARED.get(service, {}).get(operation)
        if op is None:
            problems.append(f"{service} declares no operation {operation!r}")
            continue
        try:
            op.input.model_validate(payload)
        except ValidationError as exc:
            problems.append(f"{service} {operation}: {payload} is not a valid {op.input.__name__}: {exc}")
    assert not problems, "\n".join(problems)
    missing = named_in_source() - {(s, o) for s, o, _ in calls}
    assert not missing, f"add an invocation for these CLI requests: {sorted(missing)}"


def test_the_source_scan_finds_the_cli_requests() -> None:
    named = named_in_source()
    assert ("mailbox-svc", "rotate_keys") in named and ("alert-svc", "alerts.mark_read") in named
    undeclared = {(s, o) for s, o in named if o not in DECLARED.get(s, {})}
    assert not undeclared, f"the CLI names undeclared operations: {sorted(undeclared)}"


READS_INPUT = {"csvimport.py"}
"""Modules that read the user's own files (CSV columns), not replies."""


def _models(annotation: Any, into: set[type[BaseModel]]) -> None:
    """Every model reachable from ``annotation`` (fields, lists, unions, generics)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation not in into:
            into.add(annotation)
            for spec in annotation.model_fields.values():
                _models(spec.annotation, into)
        return
    for arg in typing.get_args(annotation):
        _models(arg, into)


def answered_fields() -> set[str]:
    """Field names of every declared operation's output, the error body, and the events (with their envelope)."""
    models: set[type[BaseModel]] = set()
    for ops in DECLARED.values():
        for op in ops.values():
            _models(op.output, models)
    for root in (Problem, Envelope, *EVENT_TYPES.values()):
        _models(root, models)
    return {n for m in models for name, spec in m.model_fields.items() for n in (name, spec.alias) if n}


def read_keys(path: Path) -> Iterator[tuple[str, int]]:
    """The string keys the module reads from dicts: ``x.get("key")`` and ``x["key"]`` (not writes, not
    ``os.environ``)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and not (isinstance(node.func.value, ast.Attribute) and node.func.value.attr == "environ")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.args[0].value, node.lineno
        elif (
            isinstance(node, ast.Subscript)
            and isinstance(node.ctx, ast.Load)
            and isinstance(node.slice, ast.Constant)
            and isinstance(node.slice.value, str)
        ):
            yield node.slice.value, node.lineno


def test_every_reply_field_the_cli_reads_is_declared() -> None:
    """A field renamed or dropped in an output model fails here, not as a blank column in the CLI."""
    fields = answered_fields()
    assert {"has_credentials", "pending_test_id", "next_cursor", "detail"} <= fields
    unknown = [
        f"{path.relative_to(SOURCE)}:{line} reads {key!r}"
        for path in sorted(SOURCE.rglob("*.py"))
        if path.name not in READS_INPUT
        for key, line in read_keys(path)
        if key not in fields
    ]
    assert not unknown, "the CLI reads fields no declared output has:\n" + "\n".join(unknown)
