"""Authentication and authorization: who calls (:class:`Principal`) and what they may do.

- :mod:`.permissions`: the permission vocabulary and the role table (the one source of the docs);
- :mod:`.oidc` / :mod:`.jwks`: the organisation's OAuth2/OIDC JWTs (PyJWT);
- :mod:`.tokens`: API tokens (random, hashed, scoped, expiring, revocable) in a NATS KV bucket;
- :mod:`.authenticator`: a bearer token in, a principal out;
- :mod:`.guard`: 401 on every HTTP route but the probes (operations check their permission in
  ``mailwarden_runtime.operations.authorize``, on both doors);
- :mod:`.context`: the current caller, for owner scoping and audit fields.
"""

from mailwarden_runtime.auth.authenticator import Authenticator, bearer, bearer_header
from mailwarden_runtime.auth.context import (
    acting_as,
    current_actor,
    current_principal,
    require,
    require_mailbox,
)
from mailwarden_runtime.auth.errors import AuthError, AuthUnavailable, Forbidden, Unauthenticated
from mailwarden_runtime.auth.permissions import PERMISSIONS, ROLE_PERMISSIONS, Permission, Role, Scope
from mailwarden_runtime.auth.principal import SYSTEM, Principal
from mailwarden_runtime.auth.settings import AuthSettings

__all__ = [
    "PERMISSIONS",
    "ROLE_PERMISSIONS",
    "SYSTEM",
    "AuthError",
    "AuthSettings",
    "AuthUnavailable",
    "Authenticator",
    "Forbidden",
    "Permission",
    "Principal",
    "Role",
    "Scope",
    "Unauthenticated",
    "acting_as",
    "bearer",
    "bearer_header",
    "current_actor",
    "current_principal",
    "require",
    "require_mailbox",
]
