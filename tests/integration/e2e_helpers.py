"""The end-to-end stack of the email flows (tests/integration/test_send_e2e.py, test_sync_e2e.py).

The four services, plus the service under test (sync-svc or sender-svc) built inside their
environment, an HTTP client per service, the org's settings allowing the suite's IMAP and SMTP
ports, an IMAP + SMTP profile on the suite's Dovecot and SMTP server, and one mailbox created
through the public API with the given login (approved unless asked not to, never tested yet).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from fastapi import FastAPI

from mailwarden_runtime.auth import bearer_header
from mailwarden_servers import DovecotServer, SmtpServer

SETTINGS_KEPT = (
    "default_profile_id",
    "incoming_delivery",
    "outgoing_delivery",
    "approved_users_only",
    "alert_levels",
)


@dataclass
class E2eStack:
    """The running services (``apps``, the one under test too), a client each, and the mailbox.

    ``tag`` is this stack's own (in the mailbox id and the owners' ids): a test marks what it
    sends or receives with it."""

    apps: dict[str, FastAPI]
    http: dict[str, httpx.AsyncClient]
    auth: dict[str, str]
    tag: str
    mailbox_id: str
    profile_owner: str
    mailbox_owner: str

    async def approve(self) -> None:
        resp = await self.http["mailbox"].post("/mailboxes/approve", json={"mailbox_ids": [self.mailbox_id]})
        assert resp.status_code == 200, resp.text

    async def test_and_enable(self) -> None:
        resp = await self.http["mailbox"].post(f"/mailboxes/{self.mailbox_id}/test")
        assert resp.status_code == 202, resp.text


class E2eFactory(Protocol):
    def __call__(
        self,
        under_test: Callable[[], dict[str, FastAPI]],
        user: str,
        password: str,
        *,
        advanced: dict[str, Any] | None = None,
        mailbox: dict[str, Any] | None = None,
        approve: bool = True,
    ) -> AbstractAsyncContextManager[E2eStack]: ...


def e2e_factory(
    dovecot: DovecotServer,
    smtp_server: SmtpServer,
    mailwarden_services: Callable[[], AbstractAsyncContextManager[dict[str, FastAPI]]],
) -> E2eFactory:
    """Factory: ``async with e2e_stack(lambda: {"sync": create_app(...)}, user, password) as s``.

    ``under_test`` is called inside the services' environment (database prefix, key rings), so the
    apps it returns share them; ``advanced`` goes into the profile, ``mailbox`` into the mailbox.
    """

    @asynccontextmanager
    async def run(
        under_test: Callable[[], dict[str, FastAPI]],
        user: str,
        password: str,
        *,
        advanced: dict[str, Any] | None = None,
        mailbox: dict[str, Any] | None = None,
        approve: bool = True,
    ) -> AsyncIterator[E2eStack]:
        tag = uuid.uuid4().hex[:8]
        async with mailwarden_services() as services, AsyncExitStack() as stack:
            apps = {**services, **under_test()}
            for name, app in apps.items():
                if name not in services:
                    await stack.enter_async_context(app.router.lifespan_context(app))
            auth = bearer_header(services["profile"].state.token)
            http = {
                name: await stack.enter_async_context(
                    httpx.AsyncClient(
                        transport=httpx.ASGITransport(app=app), base_url="http://svc", headers=auth
                    )
                )
                for name, app in apps.items()
            }
            settings = (await http["profile"].get("/settings")).json()
            body = {k: v for k, v in settings.items() if k in SETTINGS_KEPT}
            body |= {
                "port_preset": "custom",
                "allowed_ports": [dovecot.imaps_port, smtp_server.port_starttls],
            }
            assert (await http["profile"].put("/settings", json=body)).status_code == 200
            profile = await http["profile"].post(
                "/profiles",
                json={
                    "name": f"e2e {tag}",
                    "owner": {"kind": "user", "id": f"p{tag}", "name": "P", "email": "p@example.org"},
                    "incoming_protocol": "imap",
                    "incoming": {"host": "127.0.0.1", "port": dovecot.imaps_port, "tls": "implicit"},
                    "use_same_settings_for_outgoing": False,
                    "outgoing": {"host": "127.0.0.1", "port": smtp_server.port_starttls, "tls": "starttls"},
                }
                | ({"advanced": advanced} if advanced else {}),
            )
            assert profile.status_code == 201, profile.text
            created = await http["mailbox"].post(
                "/mailboxes",
                json={
                    "mailbox_id": f"mbx{tag}",
                    "email": f"{user}@mail.test",
                    "owner": {"kind": "user", "id": f"o{tag}", "name": "O", "email": "o@example.org"},
                    "profile_id": profile.json()["profile_id"],
                    "credentials": {"username": user, "password": password},
                }
                | (mailbox or {}),
            )
            assert created.status_code == 201, created.text
            s = E2eStack(apps, http, auth, tag, f"mbx{tag}", f"p{tag}", f"o{tag}")
            if approve:
                await s.approve()
            yield s

    return run
