"""The one exception of this library: a failure already classified with the error catalog."""

from __future__ import annotations

from contracts.errors import ErrorCode


class NetError(Exception):
    """A classified failure talking to a mail server; ``detail`` never holds a credential.

    ``response_code``: the server's own code it was classified by (e.g. IMAP ``NONEXISTENT``).
    """

    def __init__(self, code: ErrorCode, detail: str = "", response_code: str | None = None) -> None:
        super().__init__(f"{code.value}: {detail}" if detail else code.value)
        self.code = code
        self.detail = detail
        self.response_code = response_code


def trimmed(text: bytes, limit: int = 160) -> str:
    """A short form of a server reply for error details (decoded leniently, cut at ``limit``)."""
    return text.decode("utf-8", "replace")[:limit]
