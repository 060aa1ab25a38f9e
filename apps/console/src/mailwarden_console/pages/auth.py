"""Sign-in and sign-out: with the organisation's identity provider (OIDC) or an API token.

Both doors end in the same :class:`~mailwarden_console.session.Session`: a bearer token the
services accept, and who it stands for (mailbox-svc's ``whoami`` with that token, which is also
the check that the services accept it). OIDC is the authorization code flow with PKCE
(:mod:`mailwarden_console.oidc`); its state, nonce and verifier wait in a sealed, HttpOnly,
SameSite=Lax cookie for the provider's redirect back (Lax: that redirect comes from another site).
"""

from __future__ import annotations

import secrets
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from mailwarden_console.client import Refused
from mailwarden_console.oidc import FLOW_MAX_AGE_S, Flow, OidcError
from mailwarden_console.session import COOKIE, Session
from mailwarden_console.web import Console, console_of, templates, text

router = APIRouter()

FLOW_COOKIE = "mw_console_oidc"
_FLOW_AAD = "console-oidc-flow"
CALLBACK = "/signin/oidc/callback"
MAX_COOKIE = 4000
"""Browsers drop a cookie over 4 KB without a word: a session that does not fit is refused here."""
TOO_LARGE = (
    "Your token is too large to keep in this console's session cookie (over 4 KB): ask your "
    "administrator to put fewer claims in it (e.g. mailbox grants) or use an API token."
)


def _safe_next(value: str) -> str:
    """Only a path of this console (never another site) after sign-in."""
    return value if value.startswith("/") and not value.startswith(("//", "/\\")) else "/"


def _page(request: Request, console: Console, next_url: str, error: str = "", status: int = 200) -> Response:
    name = console.settings.oidc_provider_name if console.oidc is not None else ""
    values = {"next": next_url, "error": error, "session": None, "oidc_name": name}
    return templates.TemplateResponse(request, "signin.html", values, status_code=status)


@router.get("/signin", response_class=HTMLResponse, name="signin_form")
async def signin_form(request: Request, next: str = "/") -> Response:
    return _page(request, console_of(request), _safe_next(next))


async def identify(console: Console, token: str) -> tuple[dict[str, Any] | None, str]:
    """Who the token stands for, or why it cannot sign in."""
    try:
        return await console.services.call(token, "mailbox-svc whoami"), ""
    except Refused as exc:
        if exc.status == 401:
            return None, "This token was not accepted. Check it, or ask an administrator for a new one."
        return None, f"Could not check the token: {exc.message}"


@router.post("/signin")
async def signin(request: Request) -> Response:
    console = console_of(request)
    form = await request.form()
    token, next_url = text(form, "token"), _safe_next(text(form, "next"))
    if not token:
        return _page(request, console, next_url, "Enter your API token.", 401)
    identity, error = await identify(console, token)
    if identity is None:
        return _page(request, console, next_url, error, 401)
    resp = RedirectResponse(next_url, status_code=303)
    if not start(console, resp, Session.start(token, "token", identity)):
        return _page(request, console, next_url, TOO_LARGE, 401)
    return resp


@router.get("/signin/oidc")
async def oidc_start(request: Request, next: str = "/") -> Response:
    console = console_of(request)
    next_url = _safe_next(next)
    if console.oidc is None:
        return _page(request, console, next_url, "Single sign-on is not configured here.", 404)
    redirect_uri = console.settings.oidc_redirect_url or str(request.url_for("oidc_callback"))
    flow = Flow.begin(next_url, redirect_uri)
    try:
        url = await console.oidc.authorization_url(flow)
    except OidcError as exc:
        return _page(request, console, next_url, f"Single sign-on is unavailable: {exc}", 503)
    resp = RedirectResponse(url, status_code=303)
    resp.set_cookie(
        FLOW_COOKIE,
        console.sessions.seal_data(asdict(flow), _FLOW_AAD),
        max_age=FLOW_MAX_AGE_S,
        path="/signin/oidc",
        httponly=True,
        samesite="lax",
        secure=console.settings.cookie_secure,
    )
    return resp


@router.get(CALLBACK, name="oidc_callback")
async def oidc_callback(
    request: Request, code: str = "", state: str = "", error: str = "", error_description: str = ""
) -> Response:
    console = console_of(request)
    data = console.sessions.open_data(request.cookies.get(FLOW_COOKIE), _FLOW_AAD)
    try:
        flow = Flow(**data) if data else None
    except TypeError:
        flow = None
    next_url = flow.next_url if flow else "/"
    problem = ""
    if console.oidc is None:
        problem = "Single sign-on is not configured here."
    elif flow is None or flow.expired:
        problem = "This sign-in was started too long ago or in another browser: start again."
    elif error:
        problem = f"The identity provider refused the sign-in: {error_description or error}."
    elif not code or not secrets.compare_digest(state, flow.state):
        problem = "The identity provider's answer is not for this sign-in: start again."
    if problem or flow is None or console.oidc is None:
        return _without_flow(_page(request, console, next_url, problem, 401))
    try:
        signed = await console.oidc.finish(flow, code)
    except OidcError as exc:
        return _without_flow(_page(request, console, next_url, f"Single sign-on failed: {exc}.", 401))
    identity, why = await identify(console, signed.access_token)
    if identity is None:
        why = why.replace("This token was", "Your identity provider's token was")
        return _without_flow(_page(request, console, next_url, why, 401))
    # A page of this console moves on (not a redirect): the redirect chain began at the provider's
    # site, and a SameSite=Strict session cookie is not sent on a cross-site chain.
    resp = templates.TemplateResponse(
        request, "signed_in.html", {"next": next_url, "subject": signed.subject, "session": None}
    )
    if not start(console, resp, Session.start(signed.access_token, "oidc", identity, signed.expires_at)):
        return _without_flow(_page(request, console, next_url, TOO_LARGE, 401))
    return _without_flow(resp)


def _without_flow(resp: Response) -> Response:
    resp.delete_cookie(FLOW_COOKIE, path="/signin/oidc")
    return resp


@router.post("/signout")
async def signout(request: Request) -> Response:
    """Forget the session; after an OIDC sign-in, end the provider's session too when it offers that."""
    console = console_of(request)
    session = console.sessions.open(request.cookies.get(COOKIE))
    provider_logout = None
    if session is not None and session.method == "oidc" and console.oidc is not None:
        provider_logout = await console.oidc.logout_url(str(request.url_for("signin_form")))
    resp: Response = RedirectResponse("/signin", status_code=303)
    if provider_logout is not None:
        # A page moves on to the provider (a redirect after a form post to another site is
        # blocked by our own Content-Security-Policy, form-action 'self').
        values = {"provider_logout": provider_logout, "provider_name": console.settings.oidc_provider_name}
        resp = templates.TemplateResponse(request, "signed_out.html", {**values, "session": None})
    resp.delete_cookie(COOKIE, path="/")
    return resp


def start(console: Console, resp: Response, session: Session) -> bool:
    """The session cookie: sealed, HttpOnly, SameSite=Strict; it ends with the session.

    False (and no cookie) when the session would not fit in a cookie.
    """
    try:
        value = console.sessions.seal(session)
    except ValueError:  # larger than a sealed value may be at all
        return False
    if len(COOKIE) + len(value) > MAX_COOKIE:
        return False
    max_age = console.sessions.max_age_s
    if session.expires_at is not None:
        max_age = max(1, min(max_age, int(session.expires_at - session.issued_at)))
    resp.set_cookie(
        COOKIE,
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="strict",
        secure=console.settings.cookie_secure,
    )
    return True
