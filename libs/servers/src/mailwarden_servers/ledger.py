"""A ledger of the server processes we started, so a run that was killed leaves no orphans behind.

`atexit` stops our servers when the interpreter ends normally, but a SIGKILLed test run (a CI
timeout, a Ctrl-\\ or `kill -9` of pytest) never gets there: its Dovecot, nats-server and
database keep running in their own sessions, holding ports and CPU. Each start is written down
here (the child's PID and start time, and ours); the next run that starts a server stops every
recorded child whose starter is gone. Start times make a recycled PID harmless: a record only
matches the very process it was written for.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Ledger", "default_ledger"]


def _start_ticks(pid: int) -> int | None:
    """When `pid` started (clock ticks since boot), or None when it is not running or unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may contain spaces and parentheses: fields start after the last ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    try:
        return int(fields[19])  # field 22 of proc(5), the 20th after pid and comm
    except (IndexError, ValueError):
        return None


@dataclass(frozen=True)
class _Record:
    child: int
    child_ticks: int
    parent: int
    parent_ticks: int

    def render(self) -> str:
        return f"{self.child} {self.child_ticks} {self.parent} {self.parent_ticks}\n"

    @classmethod
    def parse(cls, text: str) -> _Record | None:
        try:
            child, child_ticks, parent, parent_ticks = (int(part) for part in text.split())
        except ValueError:
            return None
        return cls(child, child_ticks, parent, parent_ticks)


class Ledger:
    """Records of started children in one folder, one file per child PID."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def record(self, child: int) -> None:
        """Write down that we started `child` (a session leader: its PID is its group's id)."""
        child_ticks, parent_ticks = _start_ticks(child), _start_ticks(os.getpid())
        if child_ticks is None or parent_ticks is None:
            return  # no /proc (not Linux): nothing reliable to record
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        record = _Record(child, child_ticks, os.getpid(), parent_ticks)
        (self.folder / str(child)).write_text(record.render())

    def forget(self, child: int) -> None:
        """The child was stopped by us."""
        with contextlib.suppress(OSError):
            (self.folder / str(child)).unlink()

    def reap(self) -> list[int]:
        """SIGKILL the process group of every recorded child whose starter is gone; their PIDs."""
        reaped: list[int] = []
        try:
            entries = list(self.folder.iterdir())
        except OSError:
            return reaped
        for entry in entries:
            try:
                record = _Record.parse(entry.read_text())
            except OSError:
                continue
            if record is not None and _start_ticks(record.parent) == record.parent_ticks:
                continue  # its starter still runs (another test run): not an orphan
            if record is not None and _start_ticks(record.child) == record.child_ticks:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(record.child, signal.SIGKILL)
                    reaped.append(record.child)
            with contextlib.suppress(OSError):
                entry.unlink()
        return reaped


def default_ledger() -> Ledger:
    """The ledger shared by every run of this user on this machine."""
    return Ledger(Path(tempfile.gettempdir()) / f"mailwarden-servers-{os.getuid()}")
