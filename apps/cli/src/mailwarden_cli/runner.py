"""Run one command's coroutine with a NATS connection and turn failures into messages and exit codes."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import typer
from nats.errors import Error as NatsError
from rich.console import Console

from mailwarden_cli.client import Bus, CliError, Options

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

Work = Callable[[Bus], Awaitable[int | None]]


def options(ctx: typer.Context) -> Options:
    obj = ctx.find_root().obj
    return obj if isinstance(obj, Options) else Options()


def run(ctx: typer.Context, work: Work) -> None:
    """Connect, run ``work``, exit with its code (0 when it returns None)."""

    async def main() -> int | None:
        async with Bus(options(ctx)) as bus:
            return await work(bus)

    try:
        code = asyncio.run(main())
    except CliError as exc:
        fail(exc.lines, exc.code)
    except NatsError as exc:  # the connection went away between two steps
        fail([f"lost the connection to NATS at {options(ctx).nats_url}: {exc}"])
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    if code:
        raise typer.Exit(code)


def fail(lines: list[str], code: int = 1) -> None:
    """Print ``lines`` on stderr, each on its own line, and exit with ``code``."""
    for i, line in enumerate(lines):
        prefix = "[bold red]error:[/] " if i == 0 else ""
        err.print(prefix + _escape(line), soft_wrap=True)
    raise typer.Exit(code)


def usage(message: str) -> None:
    """A bad combination of options: exit code 2, like Typer's own usage errors."""
    fail([message], 2)


def emit_json(value: Any) -> None:
    """Machine-readable output: plain JSON on stdout, no colour, no wrapping."""
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")
    sys.stdout.flush()


def _escape(text: str) -> str:
    return text.replace("[", "\\[")
