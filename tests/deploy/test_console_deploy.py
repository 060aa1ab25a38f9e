"""The console as deployed (compose and Kustomize): its settings are real, it reaches the three
services' APIs and NATS only, its session key ring comes from a secret, and the browser-facing
port is published on loopback (compose) or opened to the Ingress controller only (Kubernetes)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import yaml
from deploy_helpers import ROOT, Doc, settings_env

API_SERVICES = {"profile-svc", "mailbox-svc", "alert-svc", "sync-svc"}
URLS = {"MW_CONSOLE_PROFILE_URL": "profile-svc", "MW_CONSOLE_MAILBOX_URL": "mailbox-svc",
        "MW_CONSOLE_ALERT_URL": "alert-svc", "MW_CONSOLE_SYNC_URL": "sync-svc"}  # fmt: skip


def test_compose_console() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    console = compose["services"]["console"]
    env = {k: str(v) for k, v in console["environment"].items()}
    assert not set(env) - settings_env("console"), "variables the console never reads"
    for var, service in URLS.items():
        assert urlsplit(env[var]).hostname == service and service in console["depends_on"]
    assert "MW_CONSOLE_SESSION_KEYS" not in env, "the session key ring comes from keys.env"
    assert [f["path"] for f in console["env_file"]] == ["deploy/compose/keys.env"]
    assert "MW_CONSOLE_SESSION_KEYS=" in (ROOT / "deploy/compose/keys.env.example").read_text()
    assert console["build"]["args"]["SERVICE"] == "mailwarden-console"
    assert all(p.startswith("127.0.0.1:") for p in console["ports"])
    assert console["read_only"] is True and console["cap_drop"] == ["ALL"]


def _console_docs(render: Callable[[str], list[Doc]]) -> dict[str, dict[str, Any]]:
    docs = render("k8s/overlays/production")
    return {d["kind"]: d for d in docs if d["metadata"]["name"] == "console"}


def test_kubernetes_console(render: Callable[[str], list[Doc]]) -> None:
    docs = _console_docs(render)
    (container,) = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert not set(env) - settings_env("console")
    for var, service in URLS.items():
        assert urlsplit(env[var]["value"]).hostname == service
    assert env["MW_CONSOLE_SESSION_KEYS"]["valueFrom"]["secretKeyRef"]["name"] == "mailwarden-secrets"
    assert "MW_MONGODB_URI" not in env
    egress = docs["NetworkPolicy"]["spec"]["egress"]
    peers = {
        peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
        for rule in egress
        if 8000 in {p["port"] for p in rule["ports"]}
        for peer in rule["to"]
    }
    assert peers == API_SERVICES, "the console calls the four API services and nothing else on HTTP"
    ports = {p["port"] for rule in egress for p in rule["ports"]}
    assert ports == {53, 4222, 8000}
