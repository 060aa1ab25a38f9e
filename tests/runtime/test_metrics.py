"""Metrics follow Prometheus naming and never label by host, address or mailbox."""

from __future__ import annotations

import re

from prometheus_client import REGISTRY

import alert_svc.metrics
import mailwarden_runtime.metrics
import tester_svc.metrics

FORBIDDEN_LABELS = {"host", "address", "ip", "mailbox", "mailbox_id", "email", "username", "user"}


def test_every_mailwarden_metric_is_named_by_the_conventions() -> None:
    assert alert_svc.metrics and tester_svc.metrics and mailwarden_runtime.metrics  # all registered
    families = [m for m in REGISTRY.collect() if m.name.startswith("mailwarden_")]
    names = {m.name for m in families}
    assert {
        "mailwarden_event_lag_seconds",
        "mailwarden_consumer_pending_messages",
        "mailwarden_outbox_backlog",
        "mailwarden_dead_letters",
        "mailwarden_alerts_raised",
        "mailwarden_tester_tests",
    } <= names
    for family in families:
        assert re.fullmatch(r"mailwarden_[a-z0-9_]+", family.name)
        if family.type == "histogram":
            assert family.name.endswith(("_seconds", "_bytes")), family.name
        for sample in family.samples:
            assert not FORBIDDEN_LABELS & set(sample.labels), (family.name, sample.labels)
            if family.type == "counter" and sample.name.endswith("_total"):
                assert sample.name == f"{family.name}_total"
