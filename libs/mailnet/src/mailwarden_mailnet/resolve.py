"""Name resolution, as the mail clients import it: implemented once in :mod:`mailwarden_runtime.egress.resolve`."""

from __future__ import annotations

from mailwarden_runtime.egress.resolve import (
    ResolveError,
    Resolver,
    StaticResolver,
    SystemResolver,
    resolve_with_deadline,
)

__all__ = ["ResolveError", "Resolver", "StaticResolver", "SystemResolver", "resolve_with_deadline"]
