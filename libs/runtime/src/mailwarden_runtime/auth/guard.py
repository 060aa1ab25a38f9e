"""HTTP: a 401 before any route runs (the probes excepted); the caller is current while it runs.

The permission of each operation is checked by ``mailwarden_runtime.operations.authorize`` on
both doors; this covers the routes that are not operations (API docs, /metrics) and lets the
operations reuse the verified caller.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from mailwarden_runtime.auth.authenticator import Authenticator
from mailwarden_runtime.auth.context import acting_as
from mailwarden_runtime.auth.errors import AuthError

PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})


def auth_problem(exc: AuthError) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="mailwarden"'} if exc.status == 401 else None
    return JSONResponse(status_code=exc.status, content={"detail": exc.detail, "errors": []}, headers=headers)


class AuthMiddleware:
    """Authenticates every HTTP request but the public probes; the caller is current while it runs."""

    def __init__(
        self, app: ASGIApp, authenticator: Callable[[], Authenticator], public: Callable[[], frozenset[str]]
    ) -> None:
        self.app = app
        self._authenticator = authenticator
        self._public = public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path", "") in self._public():
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        try:
            principal = await self._authenticator().authenticate(headers)
        except AuthError as exc:
            await auth_problem(exc)(scope, receive, send)
            return
        with acting_as(principal):
            await self.app(scope, receive, send)
