"""Free-port allocation and readiness polling for locally started servers."""

from __future__ import annotations

import socket
import threading
import time
from collections import deque
from pathlib import Path
from typing import Protocol

__all__ = [
    "ServerStartError",
    "Watched",
    "free_port",
    "log_tail",
    "port_is_free",
    "port_or_free",
    "wait_port",
]

LOCALHOST = "127.0.0.1"


class ServerStartError(RuntimeError):
    """A server process died or never became ready; the message carries its log tail."""


class Watched(Protocol):
    """A started process to watch while waiting (``subprocess.Popen``, ``ManagedProcess``)."""

    def poll(self) -> int | None: ...


_handed_out: deque[int] = deque(maxlen=1024)
_handing_out = threading.Lock()


def free_port(host: str = LOCALHOST) -> int:
    """Return a port the OS just handed out, so parallel runs do not collide on fixed ports.

    Never one this process handed out in its last 1,024 answers: nothing listens on a port between
    this answer and its server's start, so the OS may hand the same port out again, and two calls in
    a row (a server's client and monitor ports) got the same one (nats-server 48411, twice: "address
    already in use" in a full run).
    """
    with _handing_out:
        for _ in range(64):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((host, 0))
                port: int = sock.getsockname()[1]
            if port not in _handed_out:
                break
        _handed_out.append(port)
        return port


def port_is_free(port: int, host: str = LOCALHOST) -> bool:
    """Whether a server could listen on ``port`` now.

    Binds with ``SO_REUSEADDR``, as nats-server, uvicorn and our mail servers do: connections of a
    stopped run still in TIME-WAIT do not keep them off their port, so they must not count as taken
    here either (else a quick restart moves services to random ports). A listening socket still does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def port_or_free(preferred: int, host: str = LOCALHOST) -> int:
    """The preferred port when it is free, so URLs stay the same between runs; else any free one."""
    return preferred if port_is_free(preferred, host) else free_port(host)


def log_tail(path: Path | None, lines: int = 30) -> str:
    """Last lines of a log file, so start-up failures explain themselves."""
    if path is None:
        return ""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def describe_exit(proc: Watched, what: str, log_path: Path | None = None) -> str:
    """Build the fail-fast message for a process that exited while we waited on it."""
    path = log_path if log_path is not None else getattr(proc, "log_path", None)
    tail = log_tail(path)
    msg = f"{what} exited with code {proc.poll()} before it became ready"
    if path is not None:
        msg += f" (log: {path})"
    if tail:
        msg += "\n--- log tail ---\n" + tail
    return msg


def wait_port(
    host: str,
    port: int,
    proc: Watched | None = None,
    timeout: float = 15.0,
    *,
    log_path: Path | None = None,
) -> None:
    """Block until host:port accepts TCP; fail at once if `proc` dies instead of timing out."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            name = getattr(proc, "name", None) or str(getattr(proc, "args", ["process"])[0])
            raise ServerStartError(describe_exit(proc, f"{name} ({host}:{port})", log_path))
        try:
            socket.create_connection((host, port), timeout=0.2).close()
            return
        except OSError:
            pass
        if time.monotonic() >= deadline:
            path = log_path if log_path is not None else getattr(proc, "log_path", None)
            tail = log_tail(path)
            raise ServerStartError(
                f"{host}:{port} not accepting connections after {timeout:.1f}s"
                + (f"\n--- log tail ---\n{tail}" if tail else "")
            )
        time.sleep(0.02)
