"""Sign-in and sign-out.

Today a user signs in with an API token: the form posts it, the console checks it with one read
the token should allow (the organisation's settings; a 401 means the token is refused) and seals
it into the session cookie. OIDC login goes here too, as a second door into the same
:class:`~mailwarden_console.session.Session`: ``GET /signin/oidc`` redirecting to the provider
(authorization code + PKCE) and ``GET /signin/oidc/callback`` keeping the access token with
``Session.start(token, method="oidc")``. Nothing else changes, since every call forwards
``Session.token`` as a bearer token.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from mailwarden_console.client import Refused
from mailwarden_console.session import COOKIE, Session
from mailwarden_console.web import console_of, templates, text

router = APIRouter()


def _safe_next(value: str) -> str:
    """Only a path of this console (never another site) after sign-in."""
    return value if value.startswith("/") and not value.startswith("//") else "/mailboxes"


@router.get("/signin", response_class=HTMLResponse)
async def signin_form(request: Request, next: str = "/mailboxes") -> Response:
    return templates.TemplateResponse(
        request, "signin.html", {"next": _safe_next(next), "error": "", "session": None}
    )


@router.post("/signin")
async def signin(request: Request) -> Response:
    console = console_of(request)
    form = await request.form()
    token, next_url = text(form, "token"), _safe_next(text(form, "next"))
    error = ""
    if not token:
        error = "Enter your API token."
    else:
        try:
            await console.services.call(token, "profile-svc settings_get")
        except Refused as exc:
            # 401: not a token the services accept. A 403 is a valid token without this right:
            # signing in is fine, each screen then says what the user may not do.
            if exc.status == 401:
                error = "This token was not accepted. Check it, or ask an administrator for a new one."
            elif exc.status != 403:
                error = f"Could not check the token: {exc.message}"
    if error:
        return templates.TemplateResponse(
            request, "signin.html", {"next": next_url, "error": error, "session": None}, status_code=401
        )
    resp = RedirectResponse(next_url, status_code=303)
    set_session(resp, console.sessions.seal(Session.start(token)), console.sessions.max_age_s,
                console.settings.cookie_secure)  # fmt: skip
    return resp


@router.post("/signout")
async def signout() -> Response:
    resp = RedirectResponse("/signin", status_code=303)
    resp.delete_cookie(COOKIE, path="/")
    return resp


def set_session(resp: Response, value: str, max_age_s: int, secure: bool) -> None:
    resp.set_cookie(
        COOKIE, value, max_age=max_age_s, path="/", httponly=True, samesite="strict", secure=secure
    )
