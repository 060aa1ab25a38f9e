"""Why a request is refused: 401 (who are you?), 403 (not allowed), 503 (cannot check now)."""

from __future__ import annotations

from mailwarden_runtime.http import DomainError


class AuthError(DomainError):
    """A refusal both doors answer like any other (``Problem`` body, the same status)."""

    status = 401

    def __init__(self, detail: str, field: str | None = None) -> None:
        super().__init__(type(self).status, detail, field)


class Unauthenticated(AuthError):
    """No token, or one that does not verify. The detail never says which check failed in depth."""

    status = 401


class Forbidden(AuthError):
    status = 403


class AuthUnavailable(AuthError):
    """The token store or the identity provider's keys could not be reached in time."""

    status = 503
