"""The test given back at shutdown (classified failures are :class:`mailwarden_mailnet.errors.NetError`)."""

from __future__ import annotations

from mailwarden_runtime.consumer import Redeliver


class Draining(Redeliver):
    """The process is stopping and this test has no connection slot yet: give the request back.

    Not a result: the runner lets it through, the handler publishes nothing, and the consumer
    nak's the request at once so another tester takes it without waiting out the grace period.
    """

    def __init__(self) -> None:
        super().__init__("stopping before the test got a connection slot")
