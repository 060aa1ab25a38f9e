"""Services asking services (mailbox-svc asks profile-svc for a profile, tester-svc asks mailbox-svc
about a job): a token each holder of the transit key ring can make and check, granting only what
that service needs (``SERVICE_GRANTS``). NATS permissions (deploy/) still limit who may publish
which request; the token tells the answering service who asks, which NATS does not."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from typing import Final

from mailwarden_runtime.auth.errors import Unauthenticated
from mailwarden_runtime.auth.permissions import Permission
from mailwarden_runtime.auth.principal import Principal
from mailwarden_runtime.crypto import KeyRing

PREFIX = "mws_"
_TOKEN = re.compile(r"^mws_([a-z0-9-]{1,40})_([A-Za-z0-9-]{1,64})_([A-Za-z0-9_-]{43})$")
LABEL = b"mailwarden service token v1|"

SERVICE_GRANTS: Final[dict[str, frozenset[Permission]]] = {
    "mailbox-svc": frozenset({"profiles:read"}),
    "tester-svc": frozenset({"jobs:run", "settings:read"}),  # job state; the org's ports at start
    "sync-svc": frozenset({"credentials:use"}),  # incoming logins only (mailbox-svc's login operation)
    "sender-svc": frozenset({"credentials:use"}),  # outgoing logins only
}
SERVICE_DIRECTIONS: Final[dict[str, str]] = {"sync-svc": "incoming", "sender-svc": "outgoing"}
"""The one direction of login each service may ask mailbox-svc for."""


def _mac(key: bytes, service: str) -> str:
    digest = hmac.new(key, LABEL + service.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def service_token(ring: KeyRing, service: str) -> str:
    kid, key = ring.keys[0]
    return f"{PREFIX}{service}_{kid}_{_mac(key, service)}"


def verify_service_token(ring: KeyRing | None, text: str) -> Principal:
    match = _TOKEN.match(text)
    if ring is None or match is None:
        raise Unauthenticated("token does not verify")
    service, kid, mac = match.groups()
    key = dict(ring.keys).get(kid)
    if key is None or not hmac.compare_digest(_mac(key, service), mac):
        raise Unauthenticated("token does not verify")
    return Principal(
        subject=f"service:{service}",
        roles=frozenset(),
        grants=SERVICE_GRANTS.get(service, frozenset()),
        via="service",
    )
