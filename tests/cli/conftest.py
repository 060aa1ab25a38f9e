"""The CLI as a user runs it: ``.venv/bin/mailwarden`` in a subprocess, against the four services.

The services run in-process on the real NATS, Mongo-wire, Dovecot and SMTP servers, configured
only through the environment (as tests/integration/test_flow.py does); the CLI reaches them over
NATS alone. Subprocesses are awaited asynchronously so the services keep serving meanwhile.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi import FastAPI
from typer.testing import CliRunner

from mailwarden_servers import DovecotServer, SmtpServer

MAILWARDEN = Path(sys.executable).with_name("mailwarden")


@dataclass
class Result:
    code: int
    out: str
    err: str

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.out}\n--- stderr\n{self.err}"


Cli = Callable[..., Awaitable[Result]]


async def run_cli(
    *args: str,
    nats_url: str | None = None,
    stdin: bytes | None = None,
    wait: float = 60.0,
    token: str | None = None,
) -> Result:
    """Run ``mailwarden args...``; wide, colourless output so assertions see whole lines."""
    env = {**os.environ, "COLUMNS": "250", "NO_COLOR": "1", "TERM": "dumb"}
    env.pop("MW_NATS_URL", None)
    env.pop("MW_TOKEN", None)
    env["MW_TOKEN_FILE"] = os.devnull  # never a developer's own .data token
    if nats_url:
        env["MW_NATS_URL"] = nats_url
    if token:
        env["MW_TOKEN"] = token
    proc = await asyncio.create_subprocess_exec(
        str(MAILWARDEN),
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout=wait)
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        raise AssertionError(
            f"mailwarden {' '.join(args)} still running after {wait} s:\n{out!r}\n{err!r}"
        ) from None
    return Result(proc.returncode or 0, out.decode(), err.decode())


async def run_in_process(*args: str, nats_url: str, token: str | None = None) -> Result:
    """The same command through Typer's CliRunner, in a worker thread (the services keep this loop).

    Cheaper than a subprocess (no interpreter start, no imports), for paths that are not about the
    installed command itself. One at a time: CliRunner swaps the process's stdout and environment.
    """
    from mailwarden_cli.main import app

    def invoke() -> Result:
        env = {"COLUMNS": "250", "MW_TOKEN": token, "MW_TOKEN_FILE": os.devnull}
        result = CliRunner().invoke(app, ["--nats-url", nats_url, *args], env=env)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return Result(result.exit_code, result.stdout, result.stderr)

    return await asyncio.to_thread(invoke)


@pytest.fixture
def mailwarden() -> Cli:
    """Run the CLI as a subprocess (``await mailwarden(*args, nats_url=...)``)."""
    return run_cli


@dataclass
class Stack:
    nats_url: str
    dovecot: DovecotServer
    smtp: SmtpServer
    cli: Cli  # a subprocess: the installed command
    call: Cli  # in process (CliRunner)


@pytest.fixture(scope="module")
async def stack(
    nats_url: str,
    dovecot: DovecotServer,
    smtp_server: SmtpServer,
    mailwarden_services: Callable[[], AbstractAsyncContextManager[dict[str, FastAPI]]],
) -> AsyncIterator[Stack]:
    """The four services with their own database, and the ports of the test servers allowed (by the CLI)."""

    token = ""

    async def cli(*args: str, **kw: object) -> Result:
        return await run_cli(*args, nats_url=nats_url, token=token, **kw)  # type: ignore[arg-type]

    async def call(*args: str) -> Result:
        return await run_in_process(*args, nats_url=nats_url, token=token)

    async with mailwarden_services() as apps:
        token = apps["profile"].state.token
        ports = [dovecot.imaps_port, dovecot.pop3s_port, smtp_server.port_starttls, smtp_server.port_tls]
        res = await cli("settings", "set", "--allowed-ports", ",".join(map(str, ports)), "--json")
        assert res.code == 0, res
        yield Stack(nats_url, dovecot, smtp_server, cli, call)
