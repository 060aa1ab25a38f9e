"""What every page handler shares: the console's parts, the signed-in user, rendering and forms."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from starlette.datastructures import FormData

from mailwarden_console.client import Refused, Services
from mailwarden_console.config import ConsoleSettings
from mailwarden_console.live import LiveFeed
from mailwarden_console.oidc import OidcClient
from mailwarden_console.session import COOKIE, Session, SessionCodec

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))


@dataclass
class Console:
    """The console's long-lived parts, made once at start (``app.state.console``)."""

    settings: ConsoleSettings
    services: Services
    feed: LiveFeed
    sessions: SessionCodec
    oidc: OidcClient | None = None


class SignInRequired(Exception):
    """No valid session: the handler in app.py sends the browser to the sign-in page."""

    def __init__(self, next_url: str) -> None:
        self.next_url = next_url


class BadForm(Exception):
    """A form without the session's CSRF token (a forged or stale form): refused with 400."""


def console_of(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


@dataclass
class Ctx:
    """One request of a signed-in user: render pages, call services with their token."""

    request: Request
    console: Console
    session: Session

    async def call(self, key: str, **kw: Any) -> Any:
        return await self.console.services.call(self.session.token, key, **kw)

    async def try_call(self, key: str, **kw: Any) -> tuple[Any, Refused | None]:
        """The result, or ``None`` and the refusal (a page shows it instead of failing whole)."""
        try:
            return await self.call(key, **kw), None
        except Refused as exc:
            if exc.status == 401:
                raise SignInRequired(here(self.request)) from None
            return None, exc

    def render(self, name: str, status_code: int = 200, **values: Any) -> HTMLResponse:
        values.setdefault("notice", self.request.query_params.get("notice", ""))
        return templates.TemplateResponse(
            self.request,
            name,
            {"session": self.session, "csrf": self.session.csrf, "path": self.request.url.path, **values},
            status_code=status_code,
        )

    async def form(self) -> FormData:
        """The posted form, once its CSRF token matches the session's."""
        form = await self.request.form()
        token = form.get("csrf")
        if not isinstance(token, str) or not secrets.compare_digest(token, self.session.csrf):
            raise BadForm()
        return form


def here(request: Request) -> str:
    """This page's path and query, to come back to after signing in."""
    query = request.url.query
    return f"{request.url.path}?{query}" if query else request.url.path


def home_of(session: Session) -> str:
    """Where a user lands: the mailboxes for those who see them all, else their own alerts wall."""
    if session.may("mailboxes:read", everything=True):
        return "/mailboxes"
    if session.only_own("alerts:read"):
        return f"/alerts?{session.own_wall}"
    return "/mailboxes" if session.may("mailboxes:read") else "/errors"


def current(request: Request) -> Ctx:
    console = console_of(request)
    session = console.sessions.open(request.cookies.get(COOKIE))
    if session is None:
        raise SignInRequired(here(request))
    return Ctx(request, console, session)


Signed = Annotated[Ctx, Depends(current)]


def back(url: str, notice: str = "") -> RedirectResponse:
    """Post/redirect/get: after a change, the page again with what happened."""
    sep = "&" if "?" in url else "?"
    return RedirectResponse(f"{url}{sep}notice={quote(notice)}" if notice else url, status_code=303)


def texts(form: FormData, name: str) -> list[str]:
    return [v for v in form.getlist(name) if isinstance(v, str) and v]


def text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""
