"""Connections per host in this process: the profile's maximum concurrent connections.

A sync pass waits for a slot; an idling session takes one only if one is free at once (else the
mailbox polls), so idlers never starve the polls of their host. Across workers the limit is not
shared yet (each process enforces it on its own).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class HostSlots:
    def __init__(self) -> None:
        self._used: dict[str, int] = {}
        self._freed = asyncio.Condition()

    def try_take(self, host: str, limit: int) -> bool:
        """Take a slot now if one is free (no waiting); give it back with :meth:`give_back`."""
        key = host.lower()
        if self._used.get(key, 0) >= limit:
            return False
        self._used[key] = self._used.get(key, 0) + 1
        return True

    async def give_back(self, host: str) -> None:
        key = host.lower()
        self._used[key] = max(0, self._used.get(key, 0) - 1)
        async with self._freed:
            self._freed.notify_all()

    @contextlib.asynccontextmanager
    async def slot(self, host: str, limit: int) -> AsyncIterator[None]:
        async with self._freed:
            await self._freed.wait_for(lambda: self.try_take(host, limit))
        try:
            yield
        finally:
            await self.give_back(host)
