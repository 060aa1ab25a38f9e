"""The committed reference docs are exactly what the code generates, and they describe real messages.

When this fails after a change to events, errors, settings or subscribers: run `make docs` and
commit the result.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import gendocs
import jsonschema
import operations_reference
import pytest
from docs_samples import SAMPLES

from contracts.envelope import make_envelope

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
EVENTS = gendocs.load_events()
SERVICES = [p.parents[2].name for p in sorted(ROOT.glob("services/*/src/*/app.py"))]


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_committed_docs_are_identical_to_a_fresh_generation(generated: Path) -> None:
    fresh = _files(generated)
    committed = {f for f in _files(DOCS) if f.split("/")[0] in gendocs.GENERATED_DIRS}
    committed |= {f for f in fresh if (DOCS / f).is_file()}
    assert committed == fresh, "docs/ differs in its generated files: run `make docs`"
    stale = [f for f in sorted(fresh) if (DOCS / f).read_bytes() != (generated / f).read_bytes()]
    assert not stale, f"stale generated docs {stale}: run `make docs` and commit them"


def test_every_event_has_a_sample() -> None:
    assert set(EVENTS) - set(SAMPLES) == set(), "add a sample of the new event to tests/docs/docs_samples.py"


@pytest.mark.parametrize("event_type", sorted(EVENTS))
def test_event_schema_accepts_a_real_envelope_and_refuses_a_wrong_one(event_type: str) -> None:
    schema = json.loads((DOCS / "events" / f"{event_type}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    sample = SAMPLES[event_type]()
    assert type(sample) is EVENTS[event_type]
    envelope: dict[str, Any] = make_envelope(sample, "docs-test").model_dump(mode="json")
    validator.validate(envelope)

    other_type = {**envelope, "type": "SomethingElse"}
    newer = {**envelope, "schema_version": sample.VERSION + 1}
    without_data = {k: v for k, v in envelope.items() if k != "data"}
    unknown_field = {**envelope, "data": {**envelope["data"], "surprise": 1}}
    for bad in (other_type, newer, without_data, unknown_field):
        assert not validator.is_valid(bad)


@pytest.mark.parametrize("service", SERVICES)
def test_asyncapi_names_every_consumed_subject(service: str) -> None:
    doc = json.loads((DOCS / "asyncapi" / f"{service}.json").read_text())
    found = {s.name: s for s in gendocs.discover_services(ROOT)}
    with gendocs.quiet_logs(), gendocs.clean_environment([found[service].settings_cls]):
        app = gendocs.build_app(found[service], {"dev_mode": True})
    runtime = app.state.runtime
    consumed = {op.subject for op in runtime.rpc_operations}  # request-reply
    consumed |= {c.subject or c.event_cls.SUBJECT for c in runtime.consumers}  # events
    channels = {c["address"]: c for c in doc["channels"].values()}
    assert consumed, f"{service} consumes nothing?"
    assert consumed <= set(channels), f"{service}: missing {sorted(consumed - set(channels))}"
    by_subject = {gendocs.event_subject_family(e): e for e in EVENTS.values()}
    for subject in consumed & set(by_subject):
        ref = next(iter(channels[subject]["messages"].values()))["$ref"]
        message = gendocs.resolve(doc, ref)
        assert message["payload"] == {"$ref": f"#/components/schemas/{by_subject[subject].TYPE}Envelope"}


def test_a_service_that_does_not_import_fails_the_generation(tmp_path: Path) -> None:
    app = tmp_path / "services" / "broken-svc" / "src" / "no_such_svc_pkg" / "app.py"
    app.parent.mkdir(parents=True)
    app.write_text("raise ImportError('half written')\n")
    with pytest.raises(gendocs.DocsError, match="broken-svc"):
        gendocs.discover_services(tmp_path)


@pytest.mark.parametrize(
    ("pattern", "subject", "matches"),
    [
        ("mailwarden.alerts.>", "mailwarden.alerts.user.u42.error", True),
        ("mailwarden.alerts.>", "mailwarden.alerts", False),
        ("mailwarden.*.created", "mailwarden.mailbox.created", True),
        ("mailwarden.*.created", "mailwarden.mailbox.created.x", False),
        ("mailwarden.test.>", "mailwarden.job.started", False),
    ],
)
def test_subject_matching_follows_nats(pattern: str, subject: str, matches: bool) -> None:
    assert gendocs.subject_matches(pattern, subject) is matches


@pytest.mark.parametrize("service", SERVICES)
def test_asyncapi_references_resolve_and_operations_answer(service: str) -> None:
    """Every ``$ref`` points at something, and every request-reply operation names its reply."""
    doc = json.loads((DOCS / "asyncapi" / f"{service}.json").read_text())
    assert doc["asyncapi"] == "3.0.0"

    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            return [v for k, v in node.items() if k == "$ref"] + [r for v in node.values() for r in refs(v)]
        if isinstance(node, list):
            return [r for v in node for r in refs(v)]
        return []

    for ref in refs(doc):
        gendocs.resolve(doc, ref)
    for name, op in doc["operations"].items():
        assert op["action"] == ("send" if name.startswith("publish.") else "receive") and op["messages"], name
        if name.startswith("rpc."):
            reply = gendocs.resolve(doc, op["reply"]["messages"][0]["$ref"])
            assert "oneOf" in gendocs.resolve(doc, reply["$ref"])["payload"], name


def test_an_operation_served_without_a_declared_status_fails_the_generation() -> None:
    found = {s.name: s for s in gendocs.discover_services(ROOT)}["mailbox-svc"]
    with gendocs.quiet_logs(), gendocs.clean_environment([found.settings_cls]):
        app = gendocs.build_app(found, {"dev_mode": True})
    declared = operations_reference.declared(found.package)
    operations_reference.check_served(found.name, app, declared)
    test = next(op for op in declared if op.name == "test")
    assert 404 in test.statuses()  # POST /mailboxes/{id}/test answers 404 for an unknown mailbox
    teapot = dataclasses.replace(test, errors={**test.errors, 418: "never served"})
    with pytest.raises(operations_reference.OperationsError, match="418"):
        operations_reference.check_served(found.name, app, [teapot])


def test_asyncapi_names_each_event_a_service_publishes_by_its_nats_permissions() -> None:
    """The published events (``send``) follow deploy/helm/nats-values.yaml: each event but the
    integrations' (SendEmailRequested, EmailTracked, EmailRejected) and the dead letters has one
    publishing service."""
    publishers: dict[str, list[str]] = {}
    for service in ("profile-svc", "mailbox-svc", "tester-svc", "sync-svc", "alert-svc", "sender-svc"):
        doc = json.loads((DOCS / "asyncapi" / f"{service}.json").read_text())
        for name, op in doc["operations"].items():
            if name.startswith("publish."):
                assert op["action"] == "send"
                publishers.setdefault(name.removeprefix("publish."), []).append(service)
    assert publishers["WebhookRegistered"] == ["alert-svc"] and publishers["AlertsDeleted"] == ["alert-svc"]
    assert publishers["MailboxResyncRequested"] == ["sync-svc"] and publishers["ApiTokenCreated"] == [
        "profile-svc"
    ]
    outside = {"SendEmailRequested", "EmailTracked", "EmailRejected", "DeadLettered"}
    assert set(publishers) == set(EVENTS) - outside
    assert publishers.pop("CredentialKeysRotated") == ["profile-svc", "mailbox-svc"]  # each its own ring
    assert all(len(services) == 1 for services in publishers.values()), publishers
