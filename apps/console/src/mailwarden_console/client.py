"""Calls to the services' public HTTP APIs, each one a declared operation, with the user's token.

Every operation the console uses is named here once (service, operation, method, path and what it
lets the user do, for the "you may not ..." message); tests/console checks the table against the
services' declarations (``mailwarden_runtime.operations``), so a renamed route fails a test, not a
screen. A refusal becomes :class:`Refused` with the service's field-level errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

Service = Literal["profile-svc", "mailbox-svc", "alert-svc", "sync-svc"]


@dataclass(frozen=True)
class Route:
    service: Service
    operation: str
    method: str
    path: str
    action: str
    """What it does, as in "You may not <action>"."""


def _routes(*routes: Route) -> dict[str, Route]:
    return {f"{r.service} {r.operation}": r for r in routes}


ROUTES = _routes(
    Route("profile-svc", "list", "GET", "/profiles", "see email server profiles"),
    Route("profile-svc", "get", "GET", "/profiles/{profile_id}", "see this email server profile"),
    Route("profile-svc", "create", "POST", "/profiles", "create email server profiles"),
    Route("profile-svc", "update", "PATCH", "/profiles/{profile_id}", "change email server profiles"),
    Route("profile-svc", "delete", "DELETE", "/profiles/{profile_id}", "delete email server profiles"),
    Route("profile-svc", "settings_get", "GET", "/settings", "see the organisation's email settings"),
    Route("profile-svc", "settings_put", "PUT", "/settings", "change the organisation's email settings"),
    Route("mailbox-svc", "list", "GET", "/mailboxes", "see mailboxes"),
    Route("mailbox-svc", "get", "GET", "/mailboxes/{mailbox_id}", "see this mailbox"),
    Route("mailbox-svc", "create", "POST", "/mailboxes", "add mailboxes"),
    Route("mailbox-svc", "update", "PATCH", "/mailboxes/{mailbox_id}", "change this mailbox"),
    Route("mailbox-svc", "history", "GET", "/mailboxes/{mailbox_id}/tests", "see this mailbox's tests"),
    Route("mailbox-svc", "test", "POST", "/mailboxes/{mailbox_id}/test", "test and enable this mailbox"),
    Route("mailbox-svc", "test_many", "POST", "/mailboxes/test", "test and enable mailboxes"),
    Route("mailbox-svc", "approve", "POST", "/mailboxes/approve", "approve email of mailboxes"),
    Route("mailbox-svc", "reject", "POST", "/mailboxes/reject", "reject email of mailboxes"),
    Route(
        "mailbox-svc",
        "apply_defaults",
        "POST",
        "/mailboxes/apply-default-settings",
        "apply the default email settings to mailboxes",
    ),
    Route("mailbox-svc", "change_many", "POST", "/mailboxes/change", "change mailboxes"),
    Route("mailbox-svc", "job_start", "POST", "/jobs", "run Test & Enable jobs"),
    Route("mailbox-svc", "job_get", "GET", "/jobs/{job_id}", "see jobs"),
    Route("mailbox-svc", "job_cancel", "POST", "/jobs/{job_id}/cancel", "cancel jobs"),
    Route("mailbox-svc", "whoami", "GET", "/whoami", "sign in"),
    Route("sync-svc", "state", "GET", "/mailboxes/{mailbox_id}/sync", "see this mailbox's sync state"),
    Route("sync-svc", "pause", "POST", "/mailboxes/{mailbox_id}/sync/pause", "pause this mailbox's sync"),
    Route("sync-svc", "resume", "POST", "/mailboxes/{mailbox_id}/sync/resume", "resume this mailbox's sync"),
    Route("sync-svc", "resync", "POST", "/mailboxes/{mailbox_id}/sync/resync", "re-synchronize this mailbox"),
    Route("alert-svc", "alerts.list", "GET", "/alerts", "see these alerts"),
    Route("alert-svc", "alerts.mark_read", "PATCH", "/alerts/{alert_id}", "mark alerts read"),
    Route("alert-svc", "alerts.delete_all", "DELETE", "/alerts", "delete these alerts"),
)


@dataclass
class Refused(Exception):
    """A service said no: the status, its detail and the fields at fault."""

    status: int
    detail: str
    action: str
    errors: list[dict[str, str]] = field(default_factory=list)
    service: str = ""

    def __str__(self) -> str:
        return self.message

    @property
    def message(self) -> str:
        if self.status == 401:
            return "Your sign-in was not accepted (expired or revoked token): sign in again."
        if self.status == 403:
            # The service's own refusal, named as it answered: the console's hiding is only a courtesy.
            by = f" ({self.service} answered 403: {self.detail})" if self.service else ""
            return f"You may not {self.action}.{by}"
        if self.status == 503:
            return f"Could not {self.action} now: the service is unavailable ({self.detail})."
        return self.detail

    def by_field(self) -> dict[str, str]:
        """Field-level messages keyed by the field's dotted path (``incoming.port``)."""
        out: dict[str, str] = {}
        for err in self.errors:
            out.setdefault(err.get("field", ""), err.get("message", "invalid"))
        return out


class Services:
    """One HTTP client per service, shared by every request; the token is per call."""

    def __init__(self, urls: dict[Service, str], timeout_s: float) -> None:
        self._clients = {
            name: httpx.AsyncClient(base_url=url, timeout=timeout_s) for name, url in urls.items()
        }

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()

    async def call(
        self,
        token: str,
        key: str,
        *,
        path: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
        body: Any = None,
    ) -> Any:
        route = ROUTES[key]
        url = route.path.format(**(path or {}))
        query = {k: _query_value(v) for k, v in (params or {}).items() if v is not None and v != ""}
        try:
            resp = await self._clients[route.service].request(
                route.method,
                url,
                params=query,
                json=body,
                headers={"Authorization": f"Bearer {token}"},
            )
        except httpx.HTTPError as exc:
            raise Refused(503, type(exc).__name__, route.action, service=route.service) from None
        if resp.status_code >= 400:
            raise _refusal(resp, route.action, route.service)
        if resp.status_code == 204 or not resp.content:
            return None
        return resp.json()


def _query_value(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def _refusal(resp: httpx.Response, action: str, service: str) -> Refused:
    try:
        body = resp.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    detail = body.get("detail")
    errors = body.get("errors")
    if not isinstance(errors, list):
        errors = []
    if not isinstance(detail, str):
        detail = f"{resp.status_code} {resp.reason_phrase}"
    return Refused(resp.status_code, detail, action, [e for e in errors if isinstance(e, dict)], service)
