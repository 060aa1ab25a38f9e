"""A MongoDB-wire server (SecantusDB) run strictly as a separate process.

SecantusDB is GPL-2.0: this module only executes `python -m secantus` and talks to it over the
wire with pymongo. Never import `secantus` from project code.
"""

from __future__ import annotations

import os
import sys
import time

from pymongo import MongoClient
from pymongo.errors import PyMongoError

from mailwarden_servers.ports import LOCALHOST, ServerStartError, free_port, wait_port
from mailwarden_servers.process import ManagedProcess

__all__ = ["MongoWireServer"]


class MongoWireServer(ManagedProcess):
    """SecantusDB on 127.0.0.1: a one-node replica set, so transactions and change streams work.

    Slow (a few hundred writes/s): fine for functional tests and the dev launcher, not for load
    tests. Data persists across `restart()` unless `in_memory=True`.
    """

    name = "mongo-wire"
    stop_timeout = 15.0
    start_timeout = 60.0

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        port: int | None = None,
        *,
        in_memory: bool = False,
    ) -> None:
        super().__init__(workdir)
        self.host = LOCALHOST
        self.port = port or free_port()
        self.in_memory = in_memory
        self.storage_path = self.workdir / "data"
        # An explicit (empty) config disables SecantusDB's search of ./, ~ and /etc for one.
        self.config_path = self.workdir / "secantusd.toml"

    @property
    def uri(self) -> str:
        """Connection string for pymongo (sync or async); transactions work with it."""
        return f"mongodb://{self.host}:{self.port}/?directConnection=true"

    def command(self) -> list[str]:
        """`python -m secantus ...` with our own interpreter (the wheel lives in this venv)."""
        storage = ":memory:" if self.in_memory else str(self.storage_path)
        return [
            sys.executable, "-m", "secantus",
            "--config", str(self.config_path),
            "--host", self.host,
            "--port", str(self.port),
            "--storage-path", storage,
            "--log-level", "WARNING",
        ]  # fmt: skip

    def prepare(self) -> None:
        """Create the empty config file."""
        if not self.config_path.exists():
            self.config_path.write_text("# mailwarden: defaults only\n")

    def wait_ready(self) -> None:
        """The port opens before the server answers: wait until a ping succeeds."""
        wait_port(self.host, self.port, self, self.start_timeout)
        deadline = time.monotonic() + self.start_timeout
        last = ""
        while time.monotonic() < deadline:
            if self.poll() is not None:
                raise ServerStartError(f"SecantusDB exited\n{self.log_tail()}")
            client: MongoClient[dict[str, object]] = MongoClient(
                self.uri, serverSelectionTimeoutMS=500, connectTimeoutMS=500
            )
            try:
                client.admin.command("ping")
                return
            except PyMongoError as exc:
                last = str(exc)
            finally:
                client.close()
            time.sleep(0.05)
        raise ServerStartError(f"SecantusDB did not answer ping: {last}\n{self.log_tail()}")
