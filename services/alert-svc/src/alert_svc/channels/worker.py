"""A background loop that polls a durable queue; a failing pass is logged and retried."""

from __future__ import annotations

from abc import ABC, abstractmethod

from mailwarden_runtime.loop import BackgroundLoop


class PollingWorker(ABC):
    """A channel worker: ``run_once`` drains what is due; woken on new work, else polled."""

    name = "worker"

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._loop = BackgroundLoop(self.name, self._pass, interval_s)

    def start(self) -> None:
        self._loop.start()

    def wake(self) -> None:
        self._loop.wake()

    async def stop(self) -> None:
        await self._loop.stop()

    async def _pass(self) -> bool:
        await self.run_once()
        return False

    @abstractmethod
    async def run_once(self) -> None:
        """One pass over due work."""
