"""``mailwarden mail send`` with attachments from files, ``--wait`` for the outcome, and the tail."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
from pathlib import Path
from typing import Any

import pytest
from sender_helpers import Recorder
from typer.testing import CliRunner

from mailwarden_cli.main import app as cli
from mailwarden_runtime.auth.bootstrap import issue_token
from mailwarden_servers import NatsServer, SmtpServer

pytestmark = pytest.mark.integration


async def invoke(nats: NatsServer, *args: str) -> Any:
    runner = CliRunner()
    env = {"COLUMNS": "200", "MW_TOKEN": await issue_token(nats.url), "MW_TOKEN_FILE": "/dev/null"}
    return await asyncio.to_thread(runner.invoke, cli, ["--nats-url", nats.url, *args], env=env)


async def test_send_with_files_wait_and_follow_outcomes(
    private_nats: NatsServer, seed: Any, smtp_clean: SmtpServer, events: Recorder, tmp_path: Path
) -> None:
    await seed("mbx1")
    report = tmp_path / "report.csv"
    report.write_text("a,b\n1,2\n")
    html = tmp_path / "body.html"
    html.write_text("<p>Bericht für Zoë</p>", encoding="utf-8")
    result = await invoke(
        private_nats, "mail", "send", "mbx1", "--to", "Zoë <zoe@example.org>", "--bcc", "audit@example.org",
        "--subject", "Bericht", "--text", "siehe Anhang", "--html-file", str(html), "--attach", str(report),
        "--key", "cli-1", "--wait", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    assert status["status"] == "sent" and status["sent"]["accepted"] == [
        "zoe@example.org",
        "audit@example.org",
    ]
    msg = email.message_from_bytes(smtp_clean.messages[0].data, policy=email.policy.default)
    assert [a.get_filename() for a in msg.iter_attachments()] == ["report.csv"]  # type: ignore[attr-defined]

    tail = await invoke(private_nats, "mail", "outcomes", "mbx1", "--last", "1", "--count", "1")
    assert tail.exit_code == 0, tail.output
    assert "EmailSent" in tail.output and "cli-1" in tail.output

    refused = await invoke(private_nats, "mail", "send", "nobody", "--to", "a@example.org", "--text", "x")
    assert refused.exit_code == 1 and "mailbox_id" in refused.output
