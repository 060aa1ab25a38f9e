"""The CLI with tokens: refused without one, API tokens made, listed without secrets, revoked; the audit trail."""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # conftest is not importable under --import-mode=importlib; its fixtures are
    from conftest import Stack

pytestmark = pytest.mark.integration


async def test_without_a_token_the_cli_says_how_to_give_one(stack: Stack, mailwarden) -> None:  # type: ignore[no-untyped-def]
    res = await mailwarden("settings", "show", nats_url=stack.nats_url)
    assert res.code == 1
    assert "not authenticated" in res.err and "MW_TOKEN" in res.err


async def test_tokens_are_made_listed_without_secrets_and_revoked(stack: Stack, mailwarden) -> None:  # type: ignore[no-untyped-def]
    tag = uuid.uuid4().hex[:6]
    made = await stack.call("token", "create", f"crm-{tag}", "--roles", "auditor", "--json")
    assert made.code == 0, made
    created = json.loads(made.out)
    secret = created["token"]
    listed = await stack.call("token", "list", "--json")
    assert secret not in listed.out and created["token_id"] in listed.out
    as_auditor = await mailwarden("settings", "show", "--json", nats_url=stack.nats_url, token=secret)
    assert as_auditor.code == 0, as_auditor
    refused = await mailwarden(
        "settings", "set", "--alert-levels", "error", nats_url=stack.nats_url, token=secret
    )
    assert refused.code == 1 and "not allowed" in refused.err
    assert (await stack.call("token", "revoke", created["token_id"])).code == 0
    listed_now = json.loads((await stack.call("token", "list", "--json")).out)["items"]
    (mine,) = [t for t in listed_now if t["token_id"] == created["token_id"]]
    assert mine["state"] == "revoked" and mine["revoked_by"] == mine["created_by"] == "token:admin"
    trail = json.loads((await stack.call("audit", "--json", "--actor", "token:admin")).out)["items"]
    made_and_revoked = [e["event"] for e in trail if e["ids"].get("token_id") == created["token_id"]]
    assert made_and_revoked == ["ApiTokenRevoked", "ApiTokenCreated"]  # newest first


async def test_a_token_scoped_to_some_permissions_holds_only_those(stack: Stack, mailwarden) -> None:  # type: ignore[no-untyped-def]
    tag = uuid.uuid4().hex[:6]
    made = await stack.call(
        "token", "create", f"aud-{tag}", "--roles", "auditor", "--scopes", "audit:read", "--json"
    )
    assert made.code == 0, made
    created = json.loads(made.out)
    assert created["scopes"] == ["audit:read"]
    refused = await mailwarden("settings", "show", nats_url=stack.nats_url, token=created["token"])
    assert (
        refused.code == 1 and "not allowed" in refused.err
    )  # the auditor role reads settings; the scope not
    wider = await stack.call(
        "token", "create", f"aud2-{tag}", "--roles", "auditor", "--scopes", "keys:rotate"
    )
    assert wider.code == 1 and "scopes" in wider.err, wider


async def test_audit_names_who_changed_what(stack: Stack) -> None:
    tag = uuid.uuid4().hex[:6]
    res = await stack.call(
        "profile", "create", "--name", f"audited {tag}", "--owner-id", "o", "--owner-email", "o@example.org",
        "--protocol", "imap", "--host", "127.0.0.1", "--port", str(stack.dovecot.imaps_port), "--tls", "implicit",
        "--smtp-host", "127.0.0.1", "--smtp-port", str(stack.smtp.port_starttls), "--smtp-tls", "starttls", "-q",
    )  # fmt: skip
    assert res.code == 0, res
    profile_id = res.out.strip()
    trail = json.loads((await stack.call("audit", "--json", "--actor", "token:admin")).out)["items"]
    mine = [e for e in trail if e["ids"].get("profile_id") == profile_id]
    assert [e["event"] for e in mine] == ["ProfileCreated"]
    assert mine[0]["producer"] == "profile-svc"
    text = await stack.call("audit", "--since-hours", "1")
    assert profile_id in text.out and "token:admin" in text.out
