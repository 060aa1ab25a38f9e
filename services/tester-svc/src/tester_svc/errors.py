"""The one exception probes raise: a catalog code plus a short, secret-free detail."""

from __future__ import annotations

from contracts.errors import ErrorCode


class ProbeError(Exception):
    """A classified failure of the current step; ``detail`` never holds a credential."""

    def __init__(self, code: ErrorCode, detail: str = "") -> None:
        super().__init__(f"{code.value}: {detail}" if detail else code.value)
        self.code = code
        self.detail = detail
