"""A test run that is SIGKILLed leaves servers behind; the next run's ledger stops them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mailwarden_servers.ledger import Ledger

# A "test run" that starts a long-lived server through ManagedProcess, prints its PID, and waits
# to be killed. TMPDIR points the default ledger into the test's own folder.
_RUN = """
import sys, time
from mailwarden_servers.process import ManagedProcess

class Sleeper(ManagedProcess):
    name = "sleeper"
    def command(self):
        return [sys.executable, "-c", "import time; time.sleep(300)"]

server = Sleeper(sys.argv[1]).start()
print(server.pid, flush=True)
time.sleep(300)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_orphans_of_a_killed_run_are_stopped_by_the_next(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    run = subprocess.Popen(
        [sys.executable, "-c", _RUN, str(tmp_path / "work")], env=env, stdout=subprocess.PIPE
    )
    assert run.stdout is not None
    server_pid = int(run.stdout.readline())
    run.send_signal(signal.SIGKILL)  # no atexit, no fixture teardown
    run.wait()
    time.sleep(0.2)
    assert _alive(server_pid), "the server must outlive the killed run for this test to mean anything"

    ledger = Ledger(tmp_path / f"mailwarden-servers-{os.getuid()}")
    assert ledger.reap() == [server_pid]
    assert _wait_gone(server_pid), f"orphan {server_pid} still running after reap"
    assert list(ledger.folder.iterdir()) == []


def test_servers_of_a_live_run_are_left_alone(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True)
    try:
        ledger.record(child.pid)
        assert ledger.reap() == []  # we, its starter, still run
        assert child.poll() is None
        ledger.forget(child.pid)
        assert list(ledger.folder.iterdir()) == []
    finally:
        child.kill()
        child.wait()


def test_a_recycled_pid_is_not_killed(tmp_path: Path) -> None:
    """A record whose child PID now belongs to another process (other start time) kills nothing."""
    ledger = Ledger(tmp_path / "ledger")
    bystander = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True
    )
    try:
        ledger.folder.mkdir(parents=True)
        # child = the bystander's PID but another start time; parent = a PID that is gone.
        (ledger.folder / str(bystander.pid)).write_text(f"{bystander.pid} 1 999999999 1\n")
        assert ledger.reap() == []
        assert bystander.poll() is None
        assert list(ledger.folder.iterdir()) == []
    finally:
        bystander.kill()
        bystander.wait()
