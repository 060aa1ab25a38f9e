"""tester-svc's Prometheus metrics. Labels are bounded enums: never a host, address or mailbox."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

TESTS = Counter("mailwarden_tester_tests_total", "Tests completed, by outcome", ["outcome"])
DIRECTION_RESULTS = Counter(
    "mailwarden_tester_direction_results_total",
    "Direction results, by protocol, outcome and error code (none on success)",
    ["protocol", "outcome", "error_code"],
)
STEP_SECONDS = Histogram(
    "mailwarden_tester_step_duration_seconds",
    "Duration of each test step",
    ["protocol", "step"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
TEST_SECONDS = Histogram(
    "mailwarden_tester_test_duration_seconds",
    "Duration of whole tests",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0),
)
SHARED_LIMITS_DEGRADED = Gauge(
    "mailwarden_tester_shared_limits_degraded",
    "1 while JetStream KV does not answer and tests run under this process's local limits only",
)
LIMIT_FALLBACKS = Counter(
    "mailwarden_tester_limit_fallbacks_total",
    "Tests that fell back to the local limit because JetStream KV did not answer, by limit",
    ["limit"],
)
HOST_SLOT_WAIT = Histogram(
    "mailwarden_tester_host_slot_wait_seconds",
    "Time a test waited for a shared per-host connection lease",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0),
)
KV_SECONDS = Histogram(
    "mailwarden_tester_kv_duration_seconds",
    "JetStream KV round trips for the shared limits, by operation (conflict: a lost compare-and-set)",
    ["op"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0),
)
