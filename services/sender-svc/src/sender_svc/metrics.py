"""sender-svc's Prometheus metrics. Labels are bounded enums: never a host, address or mailbox."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

SENT = Counter("mailwarden_sender_sent_total", "Messages the server accepted")
FAILED = Counter("mailwarden_sender_failed_total", "Messages finally not sent, by error code", ["error_code"])
UNCERTAIN = Counter("mailwarden_sender_uncertain_total", "Messages handed over whose reply was never stored")
RETRIES = Counter(
    "mailwarden_sender_retries_total", "Transient failures scheduled for a retry", ["error_code"]
)
REFUSED = Counter(
    "mailwarden_sender_refused_total", "Requests refused at submission, by error code", ["error_code"]
)
QUEUE_DEPTH = Gauge("mailwarden_sender_queue_depth", "Messages queued or being sent")
SEND_SECONDS = Histogram(
    "mailwarden_sender_send_latency_seconds",
    "From the request to the server's acceptance",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
)
CONNECTIONS = Counter(
    "mailwarden_sender_connections_total", "SMTP sessions, opened or reused for a message", ["how"]
)
HOST_FULL_WAITS = Counter(
    "mailwarden_sender_host_full_waits_total",
    "Pauses while every connection slot of a host was held across the replicas",
)
SHARED_LIMITS_DEGRADED = Gauge(
    "mailwarden_sender_shared_limits_degraded",
    "1 while JetStream KV does not answer and this process's limits hold alone",
)
KV_SECONDS = Histogram(
    "mailwarden_sender_kv_duration_seconds",
    "JetStream KV round trips for the shared limits, by operation (conflict: a lost compare-and-set)",
    ["op"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0),
)
RATE_WAITS = Counter(
    "mailwarden_sender_rate_waits_total", "Messages held back by a mailbox's rate shared across the replicas"
)
SENT_COPIES = Counter(
    "mailwarden_sender_sent_copies_total",
    "Copies of sent mails in the Sent folder, by end (saved, failed)",
    ["state"],
)
