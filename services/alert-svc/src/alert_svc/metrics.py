"""alert-svc's Prometheus metrics (served on /metrics with the runtime's)."""

from __future__ import annotations

from prometheus_client import Counter

ALERTS_RAISED = Counter(
    "mailwarden_alerts_raised_total",
    "Alert occurrences recorded on a wall, by level and whether the alert was new or a repeat",
    ["level", "outcome"],
)
