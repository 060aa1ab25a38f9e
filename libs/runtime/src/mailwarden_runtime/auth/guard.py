"""Enforcement on both doors: a 401 before any route runs, a 403 per operation, for HTTP and NATS.

Every operation names the permission it needs (:class:`OperationPermissions`; the operation
declarations of libs/runtime will carry it). A route or RPC operation that names none is refused
(deny by default). A role that grants a permission only on the caller's own things (``own``)
passes only operations marked ``owner_aware``: those narrow their data to the caller themselves
(``require_mailbox``, the alerts wall's recipient filter).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from mailwarden_runtime.auth.authenticator import Authenticator
from mailwarden_runtime.auth.context import acting_as, current_principal
from mailwarden_runtime.auth.errors import AuthError, Forbidden, Unauthenticated
from mailwarden_runtime.auth.permissions import Permission
from mailwarden_runtime.auth.permissions import Scope as GrantScope
from mailwarden_runtime.auth.principal import Principal

PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})


@dataclass(frozen=True)
class OperationPermissions:
    """The permission of each HTTP route (method, path template) and each RPC operation."""

    http: Mapping[tuple[str, str], Permission] = field(default_factory=dict)
    rpc: Mapping[str, Permission] = field(default_factory=dict)
    owner_aware: frozenset[str] = frozenset()  # rpc names and "METHOD path" keys

    def check(self, principal: Principal, key: str, permission: Permission | None) -> None:
        if permission is None:
            raise Forbidden("this operation declares no permission")
        scope = principal.scope(permission)
        if scope is GrantScope.ALL or (scope is GrantScope.OWN and key in self.owner_aware):
            return
        raise Forbidden(f"needs {permission}")

    def check_http(self, principal: Principal, method: str, path: str) -> None:
        self.check(principal, f"{method} {path}", self.http.get((method, path)))

    def check_rpc(self, principal: Principal, operation: str) -> None:
        self.check(principal, operation, self.rpc.get(operation))


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


def route_guard(
    permissions: Callable[[], OperationPermissions], public: Callable[[], frozenset[str]]
) -> Callable[[Request], None]:
    """An app-wide FastAPI dependency: the matched route's permission, checked against the caller."""

    def guard(request: Request) -> None:
        route = request.scope.get("route")
        path = getattr(route, "path", request.url.path)
        if path in public():
            return
        principal = current_principal()
        if principal is None:
            raise Unauthenticated("a bearer token is required")
        permissions().check_http(principal, request.method, path)

    return guard
