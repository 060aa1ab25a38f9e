"""The one exception of this library, :class:`NetError` (kept in the runtime's egress package, which
raises it too), and how a server's reply is shortened for error details."""

from __future__ import annotations

from mailwarden_runtime.egress.errors import NetError

__all__ = ["NetError", "trimmed"]


def trimmed(text: bytes, limit: int = 160) -> str:
    """A short form of a server reply for error details (decoded leniently, cut at ``limit``)."""
    return text.decode("utf-8", "replace")[:limit]
