"""The console in a real browser: Debian's Chromium (headless) driven by Playwright, against the real
services (in-process, each behind its own uvicorn on a free port, as in production) and the suite's
NATS, Mongo-wire, Dovecot and SMTP servers. The console itself runs as a uvicorn server too, and
reaches the services only over their HTTP APIs and NATS.

MW_CONSOLE_SCREENSHOTS=<dir> saves a screenshot of each screen there (docs/console/ in the repo).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI

from mailwarden_console.app import create_app
from mailwarden_console.config import ConsoleSettings
from mailwarden_runtime.crypto import KeyRing
from mailwarden_servers import DovecotServer, SmtpServer
from mailwarden_servers.ports import free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
VIEWPORT = {"width": 1366, "height": 860}  # a laptop screen


async def serve(stack: AsyncExitStack, app: FastAPI, *, lifespan: str) -> str:
    """``app`` behind uvicorn on a free port until ``stack`` closes; its base URL."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, lifespan=lifespan, log_level="warning", timeout_graceful_shutdown=2
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())

    async def stop() -> None:
        server.should_exit = True
        await asyncio.wait_for(task, 15)

    stack.push_async_callback(stop)
    for _ in range(200):
        if server.started:
            return f"http://127.0.0.1:{port}"
        if task.done():
            task.result()
        await asyncio.sleep(0.05)
    raise RuntimeError("uvicorn did not start")


@dataclass
class ConsoleStack:
    url: str
    services: dict[str, str]
    dovecot: DovecotServer
    smtp: SmtpServer
    browser: object  # playwright Browser
    shots: Path | None
    token: str = ""  # an administrator API token to sign in with

    async def shot(self, page: object, name: str) -> None:
        if self.shots is not None:
            await page.screenshot(path=str(self.shots / f"{name}.png"), full_page=True)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
async def console(
    nats_url: str,
    dovecot: DovecotServer,
    smtp_server: SmtpServer,
    mailwarden_services: Callable[[], AbstractAsyncContextManager[dict[str, FastAPI]]],
) -> AsyncIterator[ConsoleStack]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail("Chromium is missing: `make system-deps` installs it (apt-get install chromium)")
    from playwright.async_api import async_playwright

    shots_env = os.environ.get("MW_CONSOLE_SCREENSHOTS")
    shots = Path(shots_env) if shots_env else None
    if shots is not None:
        shots.mkdir(parents=True, exist_ok=True)
    async with mailwarden_services() as apps, AsyncExitStack() as stack:
        urls = {
            name: await serve(stack, apps[name], lifespan="off") for name in ("profile", "mailbox", "alert")
        }
        settings = ConsoleSettings(
            profile_url=urls["profile"],
            mailbox_url=urls["mailbox"],
            alert_url=urls["alert"],
            nats_url=nats_url,
            session_keys=KeyRing.generate_key_text("console-test"),
            cookie_secure=False,
            page_size=5,  # small, so paging shows with a few mailboxes
        )
        url = await serve(stack, create_app(settings), lifespan="on")
        playwright = await stack.enter_async_context(async_playwright())
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        stack.push_async_callback(browser.close)
        yield ConsoleStack(url, urls, dovecot, smtp_server, browser, shots, apps["profile"].state.token)
