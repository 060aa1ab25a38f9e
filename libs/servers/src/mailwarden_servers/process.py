"""Base class for a server that runs as its own OS process and is stopped by its own PID."""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import weakref
from pathlib import Path
from typing import Self

from mailwarden_servers.ledger import default_ledger
from mailwarden_servers.ports import log_tail
from mailwarden_servers.running import Running

__all__ = ["ManagedProcess"]

# Processes still running at interpreter exit are stopped, so a crashed test run leaves no orphans.
_LIVE: weakref.WeakSet[ManagedProcess] = weakref.WeakSet()
# A run killed before its exit handlers ran is cleaned up by the next one through the ledger.
_LEDGER = default_ledger()
_reaped_once = False


def _reap_orphans_once() -> None:
    global _reaped_once
    if not _reaped_once:
        _reaped_once = True
        _LEDGER.reap()


@atexit.register
def _stop_leftovers() -> None:
    for proc in list(_LIVE):
        proc.stop(timeout=5.0)


class ManagedProcess(Running):
    """Start/stop/restart one child process, logging to `<workdir>/<name>.log`.

    Subclasses implement `command()` and may override `prepare()` (write config before each
    start) and `wait_ready()` (block until the service answers). Stopping signals only our own
    PID: SIGTERM, wait `stop_timeout`, then SIGKILL.
    """

    name = "process"
    stop_timeout = 15.0
    start_timeout = 30.0

    def __init__(self, workdir: str | os.PathLike[str]) -> None:
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / f"{self.name}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    # --- hooks -----------------------------------------------------------------------------
    def command(self) -> list[str]:
        """The argv to execute; subclasses must override."""
        raise NotImplementedError

    def env(self) -> dict[str, str] | None:
        """Environment for the child; None inherits ours."""
        return None

    def prepare(self) -> None:
        """Write config files etc. before every (re)start."""

    def wait_ready(self) -> None:
        """Block until the service is usable; default: nothing to wait for."""

    # --- lifecycle -------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        """PID of the running child, or None."""
        return self._proc.pid if self._proc is not None else None

    @property
    def is_running(self) -> bool:
        """True while the child has not exited."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        """Exit code of the last run, None while running or never started."""
        return self._proc.poll() if self._proc is not None else None

    def poll(self) -> int | None:
        """Like Popen.poll(): lets ports.wait_port() notice an early exit."""
        return self.returncode

    def log_tail(self, lines: int = 30) -> str:
        """Last lines of the log, for error messages."""
        return log_tail(self.log_path, lines)

    def log_since_start(self) -> str:
        """Log text written by the current run only (the file is appended across restarts)."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(self._log_offset)
                return fh.read().decode(errors="replace")
        except OSError:
            return ""

    def start(self) -> Self:
        """Spawn the child and wait until it is ready; on failure it is killed and re-raised."""
        if self.is_running:
            return self
        _reap_orphans_once()
        self.prepare()
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        # The child keeps its own copy of the descriptor; ours can close right away.
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                self.command(),
                cwd=self.workdir,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Own session: a Ctrl-C in the terminal must not kill servers behind our back.
                start_new_session=True,
            )
        _LIVE.add(self)
        _LEDGER.record(self._proc.pid)
        try:
            self.wait_ready()
        except BaseException:
            self.kill()
            raise
        return self

    def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM, wait up to `timeout`, then SIGKILL; returns the exit code."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(self.stop_timeout if timeout is None else timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._finish()
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL at once, e.g. to simulate a crash."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        self._finish()

    def restart(self) -> Self:
        """Stop and start again (subclasses keep their ports and data)."""
        self.stop()
        return self.start()

    def signal(self, signum: int) -> None:
        """Send a signal to our own PID (e.g. SIGHUP to reload config)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signum)

    def _finish(self) -> None:
        _LIVE.discard(self)
        if self._proc is not None:
            _LEDGER.forget(self._proc.pid)

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.is_running else "stopped"
        return f"<{type(self).__name__} {state} workdir={self.workdir}>"
