"""Time as MongoDB stores it: UTC, millisecond precision, so a response equals a later read."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)
