"""``with Server(...) as server:`` for everything that starts and stops: servers, stacks of them."""

from __future__ import annotations

from types import TracebackType
from typing import Self

__all__ = ["Running"]


class Running:
    """A context manager from ``start()`` and ``stop()``; a start that fails stops what it started."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> object:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
