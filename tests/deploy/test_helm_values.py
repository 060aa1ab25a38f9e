"""Values for the official NATS chart and the MongoDB Community Operator: a 3-node JetStream cluster
on PVCs, and per-service NATS users with the permissions of reliability.md §1.4."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from deploy_helpers import DEPLOY, SERVICES

from contracts import subjects


@pytest.fixture(scope="module")
def nats() -> dict[str, Any]:
    data = yaml.safe_load((DEPLOY / "helm" / "nats-values.yaml").read_text())
    assert isinstance(data, dict)
    return data


def _users(nats: dict[str, Any]) -> dict[str, dict[str, Any]]:
    (account,) = nats["config"]["merge"]["accounts"].values()
    return {u["user"]: u for u in account["users"]}


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS wildcard semantics: `*` is one token, `>` one or more trailing tokens."""
    pat, sub = pattern.split("."), subject.split(".")
    for i, token in enumerate(pat):
        if token == ">":
            return len(sub) > i
        if i >= len(sub) or (token != "*" and token != sub[i]):
            return False
    return len(pat) == len(sub)


def allowed(perms: dict[str, Any], subject: str) -> bool:
    """Deny wins over allow, as in nats-server."""
    if any(subject_matches(p, subject) for p in perms.get("deny", [])):
        return False
    return any(subject_matches(p, subject) for p in perms.get("allow", []))


def test_subject_matcher() -> None:
    assert subject_matches("mailwarden.>", "mailwarden.test.requested")
    assert subject_matches("$JS.API.CONSUMER.MSG.NEXT.MW_TESTS.*", "$JS.API.CONSUMER.MSG.NEXT.MW_TESTS.t")
    assert not subject_matches("mailwarden.test.*", "mailwarden.test.requested.x")
    assert not subject_matches("mailwarden.>", "mailwarden")
    assert not allowed({"allow": [">"], "deny": ["a.b"]}, "a.b")


def test_three_node_jetstream_cluster_on_volumes(nats: dict[str, Any]) -> None:
    config = nats["config"]
    assert config["cluster"] == {"enabled": True, "replicas": 3}
    js = config["jetstream"]
    assert js["enabled"] is True
    assert js["fileStore"]["enabled"] is True and js["fileStore"]["pvc"]["enabled"] is True
    assert js["memoryStore"]["enabled"] is False
    assert js["merge"]["sync_interval"] == "always"
    major, minor = (int(x) for x in nats["container"]["image"]["tag"].split("-")[0].split(".")[:2])
    assert (major, minor) >= (2, 11)


def test_every_service_has_its_own_user_and_password_from_a_secret(nats: dict[str, Any]) -> None:
    users = _users(nats)
    assert set(SERVICES) <= set(users)
    env = nats["container"]["env"]
    for name, user in users.items():
        var = re.fullmatch(r"<< \$(\w+) >>", user["password"])
        assert var, f"{name}: password must be a variable, never a literal"
        assert env[var.group(1)]["valueFrom"]["secretKeyRef"]["name"] == "nats-mailwarden-users"


def test_no_user_gets_everything(nats: dict[str, Any]) -> None:
    for name, user in _users(nats).items():
        for direction in ("publish", "subscribe"):
            patterns = user["permissions"][direction].get("allow", [])
            assert ">" not in patterns and "mailwarden.>" not in patterns, f"{name} {direction}"
            for pattern in patterns + user["permissions"][direction].get("deny", []):
                # `*` and `>` match whole tokens only: `MW_*` would silently match nothing.
                bad = [t for t in pattern.split(".") if t not in ("*", ">") and ("*" in t or ">" in t)]
                assert not bad, f"{name}: {pattern!r} has a wildcard inside a token"


def _publish(nats: dict[str, Any], user: str) -> dict[str, Any]:
    perms: dict[str, Any] = _users(nats)[user]["permissions"]["publish"]
    return perms


def test_only_mailbox_svc_requests_tests(nats: dict[str, Any]) -> None:
    for name in SERVICES:
        may = allowed(_publish(nats, name), subjects.TEST_REQUESTED)
        assert may is (name == "mailbox-svc"), name
    assert not allowed(_publish(nats, "mailwarden-cli"), subjects.TEST_REQUESTED)


def test_each_service_publishes_its_own_events_only(nats: dict[str, Any]) -> None:
    own = {
        "profile-svc": [subjects.PROFILE_CREATED, subjects.SETTINGS_CHANGED, subjects.TOKEN_CREATED],
        "mailbox-svc": [subjects.MAILBOX_STATUS_CHANGED, subjects.TEST_REQUESTED, f"{subjects.JOBS}.x"],
        "tester-svc": [subjects.TEST_COMPLETED],
        "sync-svc": [
            subjects.email_received_subject("mbx1"),
            subjects.SYNC_FAILED,
            subjects.SYNC_RECOVERED,
            subjects.SYNC_PAUSED,
            subjects.SYNC_RESYNC_REQUESTED,
        ],
        "alert-svc": [
            subjects.alert_subject("user", "u1", "error"),
            subjects.WEBHOOK_REGISTERED,
            subjects.PREFERENCES_CHANGED,
            subjects.WALL_READ,
            subjects.WALL_DELETED,
        ],
    }
    every = {s for subs in own.values() for s in subs}
    for name, mine in own.items():
        perms = _publish(nats, name)
        assert all(allowed(perms, s) for s in mine), name
        assert not any(allowed(perms, s) for s in every - set(mine)), f"{name} publishes others' events"
        assert allowed(perms, subjects.dead_letter_subject("some-consumer"))
        for stream in ("MW_CONFIG", "MW_TESTS", "MW_ALERTS", "MW_DLQ"):
            assert allowed(perms, f"$JS.API.STREAM.CREATE.{stream}")  # ensure_streams at start


def test_nobody_publishes_send_requests_and_integrations_send_through_the_operation(
    nats: dict[str, Any],
) -> None:
    """docs/access.md: a request on the stream has no identity to check; the operation has its token."""
    users = _users(nats)
    for name in users:
        assert not allowed(_publish(nats, name), subjects.SEND_REQUESTED), name
    crm = _publish(nats, "integration")
    assert allowed(crm, "mailwarden.rpc.sender-svc.send") and allowed(crm, subjects.EMAIL_TRACKED)
    assert not allowed(crm, "mailwarden.rpc.mailbox-svc.login") and not allowed(
        crm, subjects.SEND_SENT + ".m1"
    )


def test_tester_consumes_only_test_requests(nats: dict[str, Any]) -> None:
    tester = _users(nats)["tester-svc"]["permissions"]
    pub = tester["publish"]
    assert allowed(pub, f"$JS.API.CONSUMER.CREATE.MW_TESTS.testers.{subjects.TEST_REQUESTED}")
    assert not allowed(pub, f"$JS.API.CONSUMER.CREATE.MW_TESTS.testers.{subjects.TEST_COMPLETED}")
    assert not any(allowed(pub, f"$JS.API.CONSUMER.MSG.NEXT.{s}.x") for s in ("MW_CONFIG", "MW_ALERTS"))
    assert allowed(pub, "mailwarden.rpc.mailbox-svc.job_get")  # is a job cancelled? (nothing else)
    assert not allowed(pub, "mailwarden.rpc.mailbox-svc.test_many")
    assert allowed(pub, "mailwarden.rpc.profile-svc.settings_get")  # the org's ports, no event seen
    assert not allowed(pub, "mailwarden.rpc.profile-svc.settings_put")
    sub = tester["subscribe"]
    assert allowed(sub, "mailwarden.rpc.tester-svc.status")
    assert not allowed(sub, subjects.TEST_REQUESTED) and not allowed(sub, "mailwarden.alerts.user.u1.error")


def test_mailbox_svc_may_ask_profile_svc_only_for_a_profile(nats: dict[str, Any]) -> None:
    pub = _publish(nats, "mailbox-svc")
    assert allowed(pub, "mailwarden.rpc.profile-svc.get")
    assert not allowed(pub, "mailwarden.rpc.profile-svc.delete")


def test_mongodb_operator_watches_the_application_namespace() -> None:
    values = yaml.safe_load((DEPLOY / "helm" / "mongodb-operator-values.yaml").read_text())
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "base" / "kustomization.yaml").read_text())
    assert values["operator"]["watchNamespace"] == kustomization["namespace"]
