"""``create_app()``: the console as its own process (``uvicorn --factory mailwarden_console.app:create_app``)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from mailwarden_console.client import Services
from mailwarden_console.config import ConsoleSettings
from mailwarden_console.live import LiveFeed
from mailwarden_console.oidc import OidcClient
from mailwarden_console.pages import alerts, auth, catalog, events, jobs, mailboxes, profiles
from mailwarden_console.pages import settings as org_settings
from mailwarden_console.session import COOKIE, SessionCodec
from mailwarden_console.web import HERE, BadForm, Console, SignInRequired, console_of, home_of
from mailwarden_runtime.crypto import KeyRing

log = logging.getLogger(__name__)

SECURITY_HEADERS = {
    # No inline scripts and nothing from other origins: htmx and console.js are served from /static.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def session_ring(settings: ConsoleSettings) -> KeyRing:
    if settings.session_keys is not None:
        return KeyRing.parse(settings.session_keys.get_secret_value())
    if settings.dev_mode:
        return KeyRing.for_development("console-session")
    raise RuntimeError("MW_CONSOLE_SESSION_KEYS is required (or MW_DEV_MODE=true for development)")


def create_app(settings: ConsoleSettings | None = None) -> FastAPI:
    settings = settings or ConsoleSettings()
    ring = session_ring(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = Services(
            {
                "profile-svc": settings.profile_url,
                "mailbox-svc": settings.mailbox_url,
                "alert-svc": settings.alert_url,
                "sync-svc": settings.sync_url,
            },
            settings.request_timeout_s,
        )
        feed = LiveFeed(settings.nats_url, settings.job_history_h)
        await feed.start()
        oidc = OidcClient(settings) if settings.oidc_enabled else None
        sessions = SessionCodec(ring, settings.session_max_age_s)
        app.state.console = Console(settings, services, feed, sessions, oidc)
        try:
            yield
        finally:
            await feed.stop()
            await services.aclose()
            if oidc is not None:
                await oidc.aclose()

    app = FastAPI(
        title="mailwarden console", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    for module in (auth, mailboxes, profiles, org_settings, jobs, alerts, catalog, events):
        app.include_router(module.router)

    @app.get("/", include_in_schema=False)
    async def home(request: Request) -> Response:
        session = console_of(request).sessions.open(request.cookies.get(COOKIE))
        if session is None:
            raise SignInRequired("/")
        return RedirectResponse(home_of(session), status_code=303)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        return PlainTextResponse("ok")

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> Response:
        console: Console | None = getattr(request.app.state, "console", None)
        ready = console is not None and console.feed.connected
        return JSONResponse({"ready": ready, "nats": ready}, status_code=200 if ready else 503)

    @app.exception_handler(SignInRequired)
    async def to_signin(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SignInRequired)
        if request.headers.get("HX-Request"):
            return Response(status_code=204, headers={"HX-Redirect": f"/signin?next={quote(exc.next_url)}"})
        return RedirectResponse(f"/signin?next={quote(exc.next_url)}", status_code=303)

    @app.exception_handler(BadForm)
    async def bad_form(_: Request, __: Exception) -> Response:
        return HTMLResponse(
            "<p>This form is stale or was not sent by this console: reload the page.</p>", 400
        )

    @app.middleware("http")
    async def headers(request: Request, call_next: object) -> Response:
        response: Response = await call_next(request)  # type: ignore[operator]
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    return app
