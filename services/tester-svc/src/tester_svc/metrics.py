"""tester-svc's Prometheus metrics. Labels are bounded enums: never a host, address or mailbox."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

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
