"""The console in a real browser: Debian's Chromium (headless) driven by Playwright, against the real
services (in-process, each behind its own uvicorn on a free port, as in production; sync-svc too)
and the suite's NATS, Mongo-wire, Dovecot and SMTP servers. The console itself runs as a uvicorn
server too, and reaches the services only over their HTTP APIs and NATS. A local OpenID Connect
provider (``oidc_provider.LocalProvider``) is the organisation's identity provider: the console
signs in with it and the services verify its tokens (``MW_AUTH_OIDC_*``).

MW_CONSOLE_SCREENSHOTS=<dir> saves a screenshot of each screen there (docs/console/ in the repo).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI

sys.path.insert(0, str(Path(__file__).parent))

from oidc_provider import LocalProvider

from mailwarden_console.app import create_app
from mailwarden_console.config import ConsoleSettings
from mailwarden_runtime.auth import Role
from mailwarden_runtime.auth.bootstrap import issue_token
from mailwarden_runtime.crypto import KeyRing
from mailwarden_servers import DovecotServer, SmtpServer, TestCertificates
from mailwarden_servers.ports import free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
VIEWPORT = {"width": 1366, "height": 860}  # a laptop screen


async def serve(stack: AsyncExitStack, app: FastAPI, *, lifespan: str, port: int = 0) -> str:
    """``app`` behind uvicorn on ``port`` (default: a free one) until ``stack`` closes; its base URL."""
    port = port or free_port()
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
    idp: LocalProvider | None = None
    nats_url: str = ""

    async def token_for(self, subject: str, role: Role, mailboxes: list[str] | None = None) -> str:
        """An API token of ``subject`` with one role (and granted mailboxes)."""
        return await issue_token(self.nats_url, subject, [role], mailboxes=mailboxes)

    async def shot(self, page: object, name: str) -> None:
        if self.shots is not None:
            await page.screenshot(path=str(self.shots / f"{name}.png"), full_page=True, caret="initial")  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
async def console(
    nats_url: str,
    dovecot: DovecotServer,
    smtp_server: SmtpServer,
    certs: TestCertificates,
    mailwarden_services: Callable[[], AbstractAsyncContextManager[dict[str, FastAPI]]],
) -> AsyncIterator[ConsoleStack]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail("Chromium is missing: `make system-deps` installs it (apt-get install chromium)")

    shots_env = os.environ.get("MW_CONSOLE_SCREENSHOTS")
    shots = Path(shots_env) if shots_env else None
    if shots is not None:
        shots.mkdir(parents=True, exist_ok=True)
    from sync_svc.app import create_app as sync_app
    from sync_svc.config import Settings as SyncSettings

    idp = LocalProvider()
    async with AsyncExitStack() as outer:
        idp.issuer = await serve(outer, idp.app(), lifespan="off")
        mp = outer.enter_context(pytest.MonkeyPatch.context())
        mp.setenv("MW_AUTH_OIDC_ISSUER", idp.issuer)
        mp.setenv("MW_AUTH_OIDC_AUDIENCE", idp.audience)
        mp.setenv("MW_AUTH_OIDC_JWKS_URL", f"{idp.issuer}/jwks")
        mp.setenv("MW_AUTH_JWKS_ALLOW_NETWORKS", "127.0.0.0/8")  # the local provider, allowed explicitly
        async with mailwarden_services() as apps, AsyncExitStack() as stack:
            sync = sync_app(  # the env the fixture set (database, key rings) is sync-svc's too
                SyncSettings(
                    sync_allow_networks="127.0.0.0/8", sync_ca_file=str(certs.ca), sync_poll_floor_s=0.5
                )
            )
            await stack.enter_async_context(sync.router.lifespan_context(sync))
            apps = {**apps, "sync": sync}
            yield await _console(stack, apps, idp, nats_url, dovecot, smtp_server, shots)


async def _console(
    stack: AsyncExitStack,
    apps: dict[str, FastAPI],
    idp: LocalProvider,
    nats_url: str,
    dovecot: DovecotServer,
    smtp_server: SmtpServer,
    shots: Path | None,
) -> ConsoleStack:
    urls = {
        name: await serve(stack, apps[name], lifespan="off")
        for name in ("profile", "mailbox", "alert", "sync")
    }
    port = free_port()
    idp.redirect_uris.add(f"http://127.0.0.1:{port}/signin/oidc/callback")
    settings = ConsoleSettings(
        profile_url=urls["profile"],
        mailbox_url=urls["mailbox"],
        alert_url=urls["alert"],
        sync_url=urls["sync"],
        nats_url=nats_url,
        session_keys=KeyRing.generate_key_text("console-test"),
        cookie_secure=False,
        page_size=5,  # small, so paging shows with a few mailboxes
        oidc_issuer=idp.issuer,
        oidc_client_id=idp.client_id,
        oidc_provider_name="Local IdP",
        oidc_allow_networks="127.0.0.0/8",  # the local provider, allowed explicitly
    )
    url = await serve(stack, create_app(settings), lifespan="on", port=port)
    from playwright.async_api import async_playwright

    playwright = await stack.enter_async_context(async_playwright())
    browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
    stack.push_async_callback(browser.close)
    token = apps["profile"].state.token
    return ConsoleStack(url, urls, dovecot, smtp_server, browser, shots, token, idp, nats_url)
