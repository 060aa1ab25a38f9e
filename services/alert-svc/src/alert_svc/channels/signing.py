"""Webhook signatures: HMAC-SHA256 over ``<timestamp>.<body>``, like Stripe's and Slack's.

Receivers recompute the MAC with their secret, compare in constant time and reject old
timestamps, which stops both forgery and replay.
"""

from __future__ import annotations

import hashlib
import hmac

TIMESTAMP_HEADER = "X-Mailwarden-Timestamp"
SIGNATURE_HEADER = "X-Mailwarden-Signature"
SCHEME = "sha256="


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return SCHEME + mac


def verify(
    secret: bytes, timestamp: str, body: bytes, signature: str, now: int, tolerance_s: int = 300
) -> bool:
    """True when ``signature`` is ours for this body and the timestamp is recent."""
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    if abs(now - ts) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, ts, body), signature)
