"""docker-compose.yml, checked without a Docker engine: parsed with PyYAML (anchors and merge keys
resolved as Compose resolves them) and held to what `docker compose up` needs to work."""

from __future__ import annotations

import re
from graphlib import CycleError, TopologicalSorter
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from deploy_helpers import (
    APPS,
    DEPLOY,
    KEY_VARS,
    ROOT,
    SERVICES,
    SHARED_RING,
    SHUTDOWN_TIMEOUT_DEFAULT_S,
    UVICORN_GRACEFUL_S,
    settings_env,
)

INFRA = ("nats", "mongo")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):  # the KEY=VALUE list form
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _env_file_paths(service: dict[str, Any]) -> list[str]:
    files = service.get("env_file", [])
    files = [files] if isinstance(files, str) else files
    return [f if isinstance(f, str) else f["path"] for f in files]


def _read_env_file(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            pairs[name.strip()] = value.strip()
    return pairs


def test_has_infrastructure_and_every_service(compose: dict[str, Any]) -> None:
    on_disk = {p.name for p in (ROOT / "services").iterdir() if (p / "pyproject.toml").exists()}
    assert set(SERVICES) == on_disk
    assert set(compose["services"]) == {*INFRA, *SERVICES, *APPS}


@pytest.mark.parametrize("name", SERVICES)
def test_service_is_built_from_the_one_dockerfile(compose: dict[str, Any], name: str) -> None:
    svc = compose["services"][name]
    build = svc["build"]
    assert build["context"] == "."
    assert (ROOT / build["context"] / build["dockerfile"]).is_file()
    assert build["args"]["SERVICE"] == name
    assert svc["image"].split(":")[0].endswith(name)


@pytest.mark.parametrize("name", SERVICES)
def test_service_healthcheck_probes_readiness(compose: dict[str, Any], name: str) -> None:
    svc = compose["services"][name]
    env = _env(svc)
    check = svc["healthcheck"]
    assert check["test"][0] == "CMD"
    assert f"http://127.0.0.1:{env['MW_HTTP_PORT']}/readyz" in " ".join(check["test"])
    for field in ("interval", "timeout", "retries", "start_period"):
        assert field in check
    # The published port reaches the port the service listens on.
    assert all(p.rsplit(":", 1)[1] == env["MW_HTTP_PORT"] for p in svc["ports"])
    assert env["MW_HTTP_HOST"] == "0.0.0.0"


@pytest.mark.parametrize("name", INFRA)
def test_infrastructure_has_healthchecks_and_volumes(compose: dict[str, Any], name: str) -> None:
    svc = compose["services"][name]
    assert svc["healthcheck"]["test"][0] == "CMD"
    named = {v.split(":")[0] for v in svc["volumes"] if not v.startswith(".")}
    assert named and named <= set(compose["volumes"])


def test_nats_runs_jetstream_on_its_volume(compose: dict[str, Any]) -> None:
    nats = compose["services"]["nats"]
    mounts = dict(v.split(":")[:2] for v in nats["volumes"])
    conf_host = next(h for h, c in mounts.items() if c.endswith(".conf"))
    conf = (ROOT / conf_host).read_text()
    store = re.search(r"store_dir:\s*(\S+)", conf)
    assert store, "nats.conf enables JetStream with a store_dir"
    assert any(store.group(1).startswith(c) for h, c in mounts.items() if not h.startswith("."))
    assert re.search(r"sync_interval:\s*always", conf)
    assert "8222" in " ".join(nats["healthcheck"]["test"])  # the monitor port is enabled
    assert re.search(r"http_port:\s*8222", conf)


def test_mongo_is_a_replica_set(compose: dict[str, Any]) -> None:
    mongo = compose["services"]["mongo"]
    command = mongo["command"]
    replset = command[command.index("--replSet") + 1]
    assert f"_id: '{replset}'" in " ".join(mongo["healthcheck"]["test"])  # initiated by the check
    for name in SERVICES:
        uri = urlsplit(_env(compose["services"][name])["MW_MONGODB_URI"])
        assert uri.hostname == "mongo"
        assert parse_qs(uri.query)["replicaSet"] == [replset]


@pytest.mark.parametrize("name", SERVICES)
def test_environment_names_are_real_settings(compose: dict[str, Any], name: str) -> None:
    env = _env(compose["services"][name])
    assert urlsplit(env["MW_NATS_URL"]).hostname == "nats"
    assert urlsplit(env["MW_NATS_URL"]).port == 4222
    assert env["MW_MONGODB_DB"]
    unknown = set(env) - settings_env(name)
    assert not unknown, f"{name} sets variables its settings never read: {unknown}"


@pytest.mark.parametrize("name", SERVICES)
def test_keys_come_from_the_env_file_only(compose: dict[str, Any], name: str) -> None:
    svc = compose["services"][name]
    assert not {*KEY_VARS, SHARED_RING} & set(_env(svc)), "keys must not be written into docker-compose.yml"
    assert _env_file_paths(svc) == ["deploy/compose/keys.env"]
    assert "compose/keys.env" in (DEPLOY / ".gitignore").read_text().split()
    example = _read_env_file(DEPLOY / "compose" / "keys.env.example")
    needed = {v for v in KEY_VARS if v in settings_env(name)}
    assert needed <= set(example)
    assert SHARED_RING not in example, "each service its own ring"
    assert all("REPLACE" in example[v] for v in needed), "the example holds placeholders only"


def test_depends_on_waits_for_healthy_infrastructure(compose: dict[str, Any]) -> None:
    services = compose["services"]
    graph: dict[str, set[str]] = {}
    for name, svc in services.items():
        deps = svc.get("depends_on", {})
        assert isinstance(deps, dict), f"{name}: depends_on needs conditions (long form)"
        for dep, spec in deps.items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            assert spec["condition"] in {
                "service_healthy",
                "service_started",
                "service_completed_successfully",
            }
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{dep} has no healthcheck to wait for"
        graph[name] = set(deps)
    for name in SERVICES:
        assert {d: s["condition"] for d, s in services[name]["depends_on"].items()} == {
            "nats": "service_healthy",
            "mongo": "service_healthy",
        }
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as exc:  # pragma: no cover - the failure message is the point
        pytest.fail(f"depends_on has a cycle: {exc.args[1]}")
    assert order.index("nats") < min(order.index(s) for s in SERVICES)


def test_a_cycle_would_be_caught() -> None:
    """The graph check above really detects cycles (guards against a vacuous test)."""
    with pytest.raises(CycleError):
        list(TopologicalSorter({"a": {"b"}, "b": {"a"}}).static_order())


def _seconds(value: str) -> float:
    match = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", value)
    assert match and value, f"not a duration: {value!r}"
    return int(match.group(1) or 0) * 60 + int(match.group(2) or 0)


@pytest.mark.parametrize("name", SERVICES)
def test_graceful_stop_and_hardening(compose: dict[str, Any], name: str) -> None:
    svc = compose["services"][name]
    stop_budget = UVICORN_GRACEFUL_S + float(
        svc.get("environment", {}).get("MW_SHUTDOWN_TIMEOUT_S", SHUTDOWN_TIMEOUT_DEFAULT_S)
    )
    assert _seconds(svc["stop_grace_period"]) > stop_budget  # uvicorn's wait, then the runtime's stop
    assert svc["read_only"] is True
    assert "/tmp" in svc["tmpfs"]
    assert svc["cap_drop"] == ["ALL"]
    assert all(p.startswith("127.0.0.1:") for p in svc["ports"]), "published on loopback only"


def test_matches_the_compose_specification(compose: dict[str, Any]) -> None:
    """Full schema check against the official compose-spec schema, when check-jsonschema is present."""
    pytest.importorskip(
        "check_jsonschema", reason="check-jsonschema (vendored compose-spec schema) not installed"
    )
    import subprocess
    import sys

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(ROOT / "docker-compose.yml"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
