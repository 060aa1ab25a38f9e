"""The one exception of outbound connections: a failure already classified with the error catalog."""

from __future__ import annotations

from contracts.errors import ErrorCode


class NetError(Exception):
    """A classified failure of an outbound connection; ``detail`` never holds a credential.

    ``response_code``: the server's own code it was classified by (e.g. IMAP ``NONEXISTENT``).
    """

    def __init__(self, code: ErrorCode, detail: str = "", response_code: str | None = None) -> None:
        super().__init__(f"{code.value}: {detail}" if detail else code.value)
        self.code = code
        self.detail = detail
        self.response_code = response_code
