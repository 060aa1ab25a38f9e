"""The exceptions of a test: a classified probe failure, or a test given back at shutdown."""

from __future__ import annotations

from contracts.errors import ErrorCode
from mailwarden_runtime.consumer import Redeliver


class ProbeError(Exception):
    """A classified failure of the current step; ``detail`` never holds a credential."""

    def __init__(self, code: ErrorCode, detail: str = "") -> None:
        super().__init__(f"{code.value}: {detail}" if detail else code.value)
        self.code = code
        self.detail = detail


class Draining(Redeliver):
    """The process is stopping and this test has no connection slot yet: give the request back.

    Not a result: the runner lets it through, the handler publishes nothing, and the consumer
    nak's the request at once so another tester takes it without waiting out the grace period.
    """

    def __init__(self) -> None:
        super().__init__("stopping before the test got a connection slot")
