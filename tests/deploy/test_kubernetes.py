"""Kustomize overlays rendered with `kubectl kustomize`, validated against the Kubernetes schemas
(kubernetes-validate, strict) and held to the operating rules: probes, resources, graceful
termination, non-root, autoscaling, disruption budgets, network policies and secrets."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Callable
from typing import Any

import kubernetes_validate
import pytest
from deploy_helpers import (
    DEPLOY,
    DEPLOYED,
    KEY_VARS,
    SHARED_RING,
    USES_MONGO,
    UVICORN_GRACEFUL_S,
    Doc,
    settings_env,
    shutdown_timeout_s,
)

OVERLAYS = ("dev", "production")
K8S_VERSION = kubernetes_validate.latest_version()
Render = Callable[[str], list[Doc]]
PRIVATE = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "127.0.0.0/8", "100.64.0.0/10"]
MAIL_PORTS = {993, 995, 465, 587, 143, 110, 25}


def _overlay(render: Render, name: str) -> list[Doc]:
    return render(f"k8s/overlays/{name}")


def _of(docs: list[Doc], kind: str) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _container(deploy: Doc) -> dict[str, Any]:
    containers = deploy["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def _env(deploy: Doc) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in _container(deploy).get("env", [])}


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_document_is_valid_kubernetes(render: Render, overlay: str) -> None:
    docs = _overlay(render, overlay)
    assert {d["kind"] for d in docs} >= {
        "Deployment",
        "Service",
        "ConfigMap",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
    }
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        assert doc["metadata"]["namespace"] == "mailwarden"


def test_the_validator_rejects_unknown_fields(render: Render) -> None:
    """Strict validation really fails on a misspelt field (so the test above can fail)."""
    deploy = dict(_of(_overlay(render, "dev"), "Deployment")["tester-svc"])
    broken = {**deploy, "spec": {**deploy["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deployments_probe_drain_and_run_unprivileged(render: Render, overlay: str) -> None:
    deployments = _of(_overlay(render, overlay), "Deployment")
    assert set(deployments) == set(DEPLOYED)
    for name, deploy in deployments.items():
        pod = deploy["spec"]["template"]["spec"]
        c = _container(deploy)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports == {"http": 8000}
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            assert ports.get(c[probe]["httpGet"]["port"], c[probe]["httpGet"]["port"]) == 8000
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"][kind]), f"{name}: resources.{kind}"
        sleep = int(c["lifecycle"]["preStop"]["exec"]["command"][-1])
        stop_budget = UVICORN_GRACEFUL_S + shutdown_timeout_s(c)
        assert pod["terminationGracePeriodSeconds"] > sleep + stop_budget, f"{name}: grace period too short"
        sc, csc = pod["securityContext"], c["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] != 0
        assert csc["readOnlyRootFilesystem"] is True
        assert csc["allowPrivilegeEscalation"] is False
        assert csc["capabilities"]["drop"] == ["ALL"]
        assert "/tmp" in {m["mountPath"] for m in c["volumeMounts"]}
        assert c["image"].split("/")[-1].split(":")[0] == name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_environment_is_what_each_service_reads(render: Render, overlay: str) -> None:
    docs = _overlay(render, overlay)
    configmaps = _of(docs, "ConfigMap")
    for name, deploy in _of(docs, "Deployment").items():
        env = _env(deploy)
        (ref,) = [s["configMapRef"]["name"] for s in _container(deploy)["envFrom"]]
        config = configmaps[ref]["data"]
        assert config["MW_HTTP_PORT"] == "8000" and config["MW_HTTP_HOST"] == "0.0.0.0"
        known = settings_env(name)
        unknown = ({*env, *config} - known) - {
            v for v in config if v.startswith(("MW_TESTER_", "MW_SENDER_", "MW_SYNC_"))
        }
        assert not unknown, f"{name}: variables no setting reads: {unknown}"
        assert "MW_NATS_URL" in env
        assert ("MW_MONGODB_URI" in env) is USES_MONGO[name]
        keys = {k for k in env if k in KEY_VARS}
        assert keys == KEY_VARS & known, f"{name} gets exactly the key rings it needs"


def test_production_settings(render: Render) -> None:
    docs = _overlay(render, "production")
    (config,) = _of(docs, "ConfigMap").values()
    assert config["data"]["MW_STREAM_REPLICAS"] == "3"
    assert "MW_DEV_MODE" not in config["data"]
    deployments = _of(docs, "Deployment")
    for name in ("profile-svc", "mailbox-svc", "alert-svc"):
        assert deployments[name]["spec"]["replicas"] == 3
    assert "replicas" not in deployments["tester-svc"]["spec"], "the HPA owns tester-svc's count"
    assert _of(docs, "HorizontalPodAutoscaler")["tester-svc"]["spec"]["minReplicas"] == 3
    for deploy in deployments.values():
        image = _container(deploy)["image"]
        assert re.search(r":[\w.-]+$", image) and not image.endswith(":latest"), image
        spread = deploy["spec"]["template"]["spec"]["topologySpreadConstraints"][0]
        assert spread["whenUnsatisfiable"] == "DoNotSchedule"


def test_dev_settings(render: Render) -> None:
    docs = _overlay(render, "dev")
    (config,) = _of(docs, "ConfigMap").values()
    assert config["data"]["MW_DEV_MODE"] == "true"
    assert config["data"]["MW_STREAM_REPLICAS"] == "1"
    assert all(d["spec"].get("replicas", 1) == 1 for d in _of(docs, "Deployment").values())
    assert _of(docs, "HorizontalPodAutoscaler")["tester-svc"]["spec"]["minReplicas"] == 1


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_hpa_targets_tester_and_sync(render: Render, overlay: str) -> None:
    docs = _overlay(render, overlay)
    hpas = _of(docs, "HorizontalPodAutoscaler")
    assert set(hpas) == {"tester-svc", "sync-svc"}
    for name, hpa in hpas.items():
        target = hpa["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) == ("Deployment", name)
        assert target["name"] in _of(docs, "Deployment")
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pdbs_and_services_select_existing_pods(render: Render, overlay: str) -> None:
    docs = _overlay(render, overlay)
    pods = {n: d["spec"]["template"]["metadata"]["labels"] for n, d in _of(docs, "Deployment").items()}
    for kind, path in (("PodDisruptionBudget", ("selector", "matchLabels")), ("Service", ("selector",))):
        objects = _of(docs, kind)
        assert set(objects) == set(DEPLOYED)
        for name, obj in objects.items():
            selector = obj["spec"]
            for key in path:
                selector = selector[key]
            assert [p for p, labels in pods.items() if _selects(selector, labels)] == [name]
    for svc in _of(docs, "Service").values():
        assert svc["spec"]["ports"][0]["targetPort"] == "http"


def _egress_ports(policy: Doc) -> set[int]:
    return {p["port"] for rule in policy["spec"]["egress"] for p in rule.get("ports", [])}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_cover_every_service(render: Render, overlay: str) -> None:
    docs = _overlay(render, overlay)
    policies = list(_of(docs, "NetworkPolicy").values())
    for name, deploy in _of(docs, "Deployment").items():
        labels = deploy["spec"]["template"]["metadata"]["labels"]
        mine = [p for p in policies if _selects(p["spec"]["podSelector"]["matchLabels"], labels)]
        assert len(mine) == 1, f"{name}: one NetworkPolicy"
        (policy,) = mine
        assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        rules = policy["spec"]["egress"]
        assert all(rule.get("ports") for rule in rules), f"{name}: every egress rule is port-bound"
        ports = _egress_ports(policy)
        assert {4222, 53} <= ports
        assert (27017 in ports) is USES_MONGO[name]
        ip_rules = [r for r in rules if any("ipBlock" in peer for peer in r["to"])]
        if name in ("tester-svc", "sync-svc", "sender-svc"):  # the ones that reach customer mail servers
            (internet,) = ip_rules
            # sender-svc: SMTP, and IMAP(S) for the Sent-folder copy of profiles that save one
            expected = {465, 587, 25, 993, 143} if name == "sender-svc" else MAIL_PORTS
            assert {p["port"] for p in internet["ports"]} == expected
            for peer in internet["to"]:
                block = peer["ipBlock"]
                net = ipaddress.ip_network(block["cidr"])
                excepted = [ipaddress.ip_network(e) for e in block.get("except", [])]
                if net.version == 4:
                    for private in map(ipaddress.ip_network, PRIVATE):
                        assert any(private.subnet_of(e) for e in excepted), f"{name} may reach {private}"  # type: ignore[arg-type]
                else:
                    assert ipaddress.ip_network("fc00::/7") in excepted
                    assert ipaddress.ip_network("fe80::/10") in excepted
        elif name != "alert-svc":
            assert not ip_rules, f"{name} has no internet egress"


def _looks_like_key(value: str) -> bool:
    """A base64 value of 16+ bytes, alone or as the `kid:key` items of a key ring."""
    for item in re.split(r"[,\s]+", value):
        candidate = item.split(":", 1)[1] if re.match(r"^[\w.-]+:[A-Za-z0-9+/=]{20,}$", item) else item
        if len(candidate) >= 22 and re.fullmatch(r"[A-Za-z0-9+/]+={0,2}", candidate):
            try:
                if len(base64.b64decode(candidate, validate=True)) >= 16:
                    return True
            except (binascii.Error, ValueError):
                continue
    return False


def test_key_detector_finds_keys() -> None:
    real = base64.b64encode(bytes(range(32))).decode()
    assert _looks_like_key(f"k1:{real}") and _looks_like_key(real)
    assert not _looks_like_key("cred-2026a:REPLACE_WITH_BASE64_32_BYTES")
    assert not _looks_like_key("nats://tester-svc:dev-only-tester@nats.nats.svc.cluster.local:4222")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_secret_holds_key_material(render: Render, overlay: str) -> None:
    docs = _overlay(render, overlay)
    secrets = _of(docs, "Secret")
    if overlay == "production":
        assert not secrets, "production references mailwarden-secrets; it is never rendered from git"
    for secret in secrets.values():
        values = {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
        values |= secret.get("stringData", {})
        for key, value in values.items():
            assert not _looks_like_key(value), f"{secret['metadata']['name']}.{key} looks like a real key"
            if key in KEY_VARS:
                assert value == "", "dev runs on the services' built-in development keys"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secret_references_resolve(render: Render, overlay: str) -> None:
    docs = _overlay(render, overlay)
    rendered = {n: set(d.get("data", {})) for n, d in _of(docs, "Secret").items()}
    example = {
        line.split("=", 1)[0]
        for line in (DEPLOY / "k8s" / "secrets.env.example").read_text().splitlines()
        if line and not line.startswith("#")
    }
    external = {"mailwarden-secrets": example, "mailwarden-mongodb-uri": {"connectionString.standard"}}
    for name, deploy in _of(docs, "Deployment").items():
        for var, entry in _env(deploy).items():
            ref = entry.get("valueFrom", {}).get("secretKeyRef")
            if not ref:
                continue
            keys = rendered.get(ref["name"]) or external.get(ref["name"])
            assert keys is not None, f"{name}.{var}: unknown Secret {ref['name']}"
            assert ref["key"] in keys, f"{name}.{var}: Secret {ref['name']} has no key {ref['key']}"


def test_mongodb_replica_set_matches_what_services_expect(render: Render) -> None:
    (prod,) = render("mongodb/base")
    (dev,) = render("mongodb/dev")
    assert prod["kind"] == "MongoDBCommunity" and prod["spec"]["type"] == "ReplicaSet"
    assert prod["spec"]["members"] == 3 and dev["spec"]["members"] == 1
    (user,) = prod["spec"]["users"]
    assert user["connectionStringSecretName"] == "mailwarden-mongodb-uri"
    assert {"name": "readWrite", "db": "mailwarden"} in user["roles"]
    policies = _of(_overlay(render, "production"), "NetworkPolicy")
    mongo_peer = {"app": f"{prod['metadata']['name']}-svc"}  # the operator's pod label
    selectors = [
        peer["podSelector"]["matchLabels"]
        for rule in policies["mailbox-svc"]["spec"]["egress"]
        for peer in rule["to"]
        if 27017 in {p["port"] for p in rule["ports"]}
    ]
    assert selectors == [mongo_peer]
    assert prod["metadata"]["namespace"] == "mailwarden"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_storing_secrets_has_its_own_key_ring(render: Render, overlay: str) -> None:
    at_rest = {"MW_PROFILE_CREDENTIAL_KEYS", "MW_MAILBOX_CREDENTIAL_KEYS", "MW_ALERT_WEBHOOK_KEYS"}
    rings: dict[str, str] = {}
    for name, deploy in _of(_overlay(render, overlay), "Deployment").items():
        env = _env(deploy)
        assert SHARED_RING not in env, f"{name} reads the ring profile-svc and mailbox-svc shared"
        for var in at_rest & set(env):
            rings[name] = env[var]["valueFrom"]["secretKeyRef"]["key"]
    assert set(rings) == {"profile-svc", "mailbox-svc", "alert-svc"}
    assert len(set(rings.values())) == 3, rings
