"""Outbound HTTP under the egress policy (webhooks): implemented once in :mod:`mailwarden_runtime.egress.http`."""

from __future__ import annotations

from mailwarden_runtime.egress.http import (
    HostLimiter,
    HttpEgress,
    HttpReply,
    HttpTarget,
    UrlRefused,
    legacy_ipv4,
    parse_target,
)

__all__ = [
    "HostLimiter",
    "HttpEgress",
    "HttpReply",
    "HttpTarget",
    "UrlRefused",
    "legacy_ipv4",
    "parse_target",
]
