"""`make up`: the whole system on one machine, on embedded defaults, in the foreground.

Starts nats-server (JetStream) and SecantusDB (a MongoDB-wire server, run as its own process)
unless ``NATS_URL`` / ``MONGODB_URI`` point at real ones, then the services as separate
processes. Data and logs live under one folder (``MW_DATA_DIR``, default ``./.data``) and survive
restarts; so do the generated encryption keys (``keys.env``, mode 0600). Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from mailwarden_servers.mongo import MongoWireServer
from mailwarden_servers.nats import NatsServer
from mailwarden_servers.ports import ServerStartError, port_or_free
from mailwarden_servers.process import ManagedProcess


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    factory: str
    port: int


SERVICES = (
    ServiceSpec("profile-svc", "profile_svc.app:create_app", 8081),
    ServiceSpec("mailbox-svc", "mailbox_svc.app:create_app", 8082),
    ServiceSpec("tester-svc", "tester_svc.app:create_app", 8083),
    ServiceSpec("sync-svc", "sync_svc.app:create_app", 8086),
    ServiceSpec("alert-svc", "alert_svc.app:create_app", 8084),
    ServiceSpec("sender-svc", "sender_svc.app:create_app", 8085),
)
CONSOLE = ServiceSpec("console", "mailwarden_console.app:create_app", 8080)


# On SIGTERM uvicorn waits this long for open HTTP requests, then the runtime's stop runs (at most
# MW_SHUTDOWN_TIMEOUT_S, 20 s by default); the Dockerfile and the deployments use the same value.
UVICORN_GRACEFUL_S = 10


class ServiceProcess(ManagedProcess):
    """One service under uvicorn; ready when its /readyz answers 200."""

    stop_timeout = 35.0  # uvicorn's 10 s + the runtime's 20 s, then SIGKILL
    start_timeout = 60.0

    def __init__(self, workdir: Path, spec: ServiceSpec, port: int, env: dict[str, str]) -> None:
        self.name = spec.name
        super().__init__(workdir)
        self.spec = spec
        self.port = port
        self._env = env

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "uvicorn", "--factory", self.spec.factory,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--no-access-log", "--timeout-graceful-shutdown", str(UVICORN_GRACEFUL_S),
        ]  # fmt: skip

    def env(self) -> dict[str, str]:
        return {**os.environ, **self._env, "MW_HTTP_PORT": str(self.port)}

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.poll() is not None:
                raise ServerStartError(f"{self.name} exited with {self.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise ServerStartError(f"{self.name} not ready after {self.start_timeout:.0f}s:\n{self.log_tail()}")


KEY_RINGS = (
    ("MW_PROFILE_CREDENTIAL_KEYS", "profile-cred-"),
    ("MW_MAILBOX_CREDENTIAL_KEYS", "mailbox-cred-"),
    ("MW_TRANSIT_KEYS", "transit-"),
    ("MW_ALERT_WEBHOOK_KEYS", "hook-"),
    ("MW_CONSOLE_SESSION_KEYS", "console-"),
)
# A data folder from before the per-service rings keeps its shared ring (the services read it as
# their fallback): new rings would not open what it sealed.
SHARED_RING = "MW_CREDENTIAL_KEYS"
REPLACED_BY_PER_SERVICE = {"MW_PROFILE_CREDENTIAL_KEYS", "MW_MAILBOX_CREDENTIAL_KEYS"}
ADMIN_TOKEN_FILE = "admin-token.json"


def load_or_create_keys(path: Path) -> dict[str, str]:
    """Keys generated on the first start and kept, so stored secrets stay readable.

    A key ring missing from an older file is added; existing ones are never replaced.
    """
    keys: dict[str, str] = {}
    if path.exists():
        pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
        keys = {k.strip(): v.strip() for k, v in pairs}
    stamp = time.strftime("%Y%m%d")
    missing = {
        name: f"{prefix}{stamp}:{base64.b64encode(os.urandom(32)).decode()}"
        for name, prefix in KEY_RINGS
        if name not in keys and not (SHARED_RING in keys and name in REPLACED_BY_PER_SERVICE)
    }
    if missing:
        keys.update(missing)
        path.write_text("".join(f"{k}={v}\n" for k, v in keys.items()))
        path.chmod(0o600)
    return keys


def admin_token(nats_url: str, path: Path) -> None:
    """At first start, an administrator API token (0600 in the data folder), printed once."""
    if path.exists():
        print(f"  API token: {path} (the CLI reads it; or set MW_TOKEN)\n", flush=True)
        return
    # A separate process: the runtime library (which owns tokens) is not a dependency of this one.
    done = subprocess.run(
        [sys.executable, "-m", "mailwarden_runtime.auth.bootstrap", "--nats", nats_url, "--file", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise ServerStartError(f"could not create the administrator token:\n{done.stderr[-2000:]}")
    print(done.stdout, flush=True)


@dataclass
class Stack:
    """What :func:`start_stack` started: where NATS, the database and each service answer."""

    nats_url: str
    mongo_uri: str
    services: list[ServiceProcess]
    data: Path

    def url(self, service: str) -> str:
        return next(s.url for s in self.services if s.name == service)


def start_together(procs: Sequence[ManagedProcess], started: list[ManagedProcess]) -> None:
    """Start ``procs`` at the same time (each waits for its own readiness in a thread).

    Each is appended to ``started`` once it is up; the first failure is raised after all have
    settled, so the caller stops exactly what runs.
    """
    failures: list[BaseException] = []

    def one(proc: ManagedProcess) -> None:
        try:
            started.append(proc.start())
        except BaseException as exc:  # re-raised below, in the caller's thread
            failures.append(exc)

    with ThreadPoolExecutor(max_workers=max(len(procs), 1)) as pool:
        list(pool.map(one, procs))
    if failures:
        raise failures[0]


def console_env(env: dict[str, str], services: list[ServiceProcess]) -> dict[str, str]:
    """The console calls the services' HTTP APIs; plain HTTP on loopback, so no Secure-only cookie."""
    url = {svc.name: svc.url for svc in services}
    return {
        **env,
        "MW_CONSOLE_PROFILE_URL": url["profile-svc"],
        "MW_CONSOLE_MAILBOX_URL": url["mailbox-svc"],
        "MW_CONSOLE_ALERT_URL": url["alert-svc"],
        **({"MW_CONSOLE_SYNC_URL": url["sync-svc"]} if "sync-svc" in url else {}),
        "MW_CONSOLE_COOKIE_SECURE": "false",
    }


def start_stack(
    data: Path,
    started: list[ManagedProcess],
    extra_env: dict[str, str] | None = None,
    alongside: Sequence[ManagedProcess] = (),
) -> Stack:
    """Start NATS and SecantusDB (unless given by the environment), the services, then the console.

    Everything started is appended to ``started`` at once, so the caller stops it even when a
    later start fails. ``extra_env`` reaches every service (e.g. the tester's egress settings);
    ``alongside`` starts with NATS and the database (e.g. the demo's mail servers). Servers that do
    not depend on each other start at the same time: the services' imports overlap.
    """
    first: list[ManagedProcess] = list(alongside)
    nats_url = os.environ.get("NATS_URL") or os.environ.get("MW_NATS_URL")
    if not nats_url:
        nats = NatsServer(data / "nats", port_or_free(4222), monitor_port=port_or_free(8222))
        print(f"starting nats-server (JetStream) on {nats.url} ...", flush=True)
        first.append(nats)
        nats_url = nats.url
    mongo_uri = os.environ.get("MONGODB_URI") or os.environ.get("MW_MONGODB_URI")
    if not mongo_uri:
        mongo = MongoWireServer(data / "mongo", port_or_free(27017))
        print(f"starting SecantusDB (MongoDB wire protocol) on {mongo.uri} ...", flush=True)
        first.append(mongo)
        mongo_uri = mongo.uri
    start_together(first, started)
    env = {
        "MW_NATS_URL": nats_url,
        "MW_MONGODB_URI": mongo_uri,
        **load_or_create_keys(data / "keys.env"),
        **(extra_env or {}),
    }
    services = [ServiceProcess(data / "logs", spec, port_or_free(spec.port), env) for spec in SERVICES]
    print(f"starting {', '.join(s.name for s in services)} ...", flush=True)
    start_together(services, started)
    console = ServiceProcess(data / "logs", CONSOLE, port_or_free(CONSOLE.port), console_env(env, services))
    print("starting the console ...", flush=True)
    start_together([console], started)
    services.append(console)
    stack = Stack(nats_url, mongo_uri, services, data)
    (data / "endpoints.json").write_text(
        json.dumps({"nats_url": nats_url, **{s.name: s.url for s in services}}, indent=2)
    )
    return stack


def print_stack(stack: Stack) -> None:
    print("\nmailwarden is up:\n")
    print(f"  {'service':<12} {'base URL':<24} API docs")
    for svc in stack.services:
        print(
            f"  {svc.name:<12} {svc.url:<24} {'(web console)' if svc.spec is CONSOLE else svc.url + '/docs'}"
        )
    print(f"\n  NATS {stack.nats_url}   MongoDB {stack.mongo_uri}\n  data and logs: {stack.data}\n")


def stopper(started: list[ManagedProcess]) -> Callable[[], None]:
    """Stop what was started, newest first, once (Ctrl-C, SIGTERM, or the end of ``main``)."""
    stopping = False

    def stop_all() -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        print("\nstopping ...", flush=True)
        for proc in reversed(started):
            code = proc.stop()
            # uvicorn re-raises the SIGTERM it handled, so -15 after a clean shutdown is normal.
            state = "stopped" if code in (0, -signal.SIGTERM) else f"stopped (exit {code})"
            print(f"  {proc.name:<12} {state}", flush=True)

    return stop_all


def watch(started: list[ManagedProcess]) -> int:
    """Run in the foreground until a process exits (1) or Ctrl-C / SIGTERM (0)."""
    print("Ctrl-C stops everything.", flush=True)
    while True:
        for proc in started:
            if not proc.is_running:
                print(f"{proc.name} exited ({proc.returncode}); last log lines:\n{proc.log_tail()}")
                return 1
        time.sleep(1)


def sigterm_unwinds() -> None:
    """SIGTERM unwinds like Ctrl-C, so everything started is stopped."""
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))


def run_in_foreground(start: Callable[[list[ManagedProcess]], int | None]) -> int:
    """``start`` (it adds what it starts to the list it is given), then :func:`watch` unless it
    returned an exit code; everything started is stopped at the end, on Ctrl-C and on SIGTERM."""
    started: list[ManagedProcess] = []
    stop_all = stopper(started)
    sigterm_unwinds()
    try:
        code = start(started)
        return watch(started) if code is None else code
    except ServerStartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stop_all()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mailwarden-up", description=__doc__)
    parser.add_argument("--data-dir", default=os.environ.get("MW_DATA_DIR", ".data"))
    parser.add_argument(
        "--once", action="store_true", help="start, print the URLs, then stop (a smoke check)"
    )
    args = parser.parse_args(argv)
    data = Path(args.data_dir).resolve()
    data.mkdir(parents=True, exist_ok=True)
    data.chmod(0o755)

    def start(started: list[ManagedProcess]) -> int | None:
        stack = start_stack(data, started)
        print_stack(stack)
        admin_token(stack.nats_url, data / ADMIN_TOKEN_FILE)
        if args.once:
            return 0
        print("Data is kept between runs.")
        return None

    return run_in_foreground(start)


if __name__ == "__main__":
    sys.exit(main())
