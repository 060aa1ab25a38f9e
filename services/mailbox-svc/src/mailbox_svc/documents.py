"""The stored shape of a mailbox, and its views: the API's and the events' (never a secret)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from contracts.events import MailboxSnapshot
from contracts.models import DeliveryMethod, Owner, TestStatus, TestWarning
from mailbox_svc.credentials import INCOMING, OUTGOING, open_login, seal_login
from mailbox_svc.models import LastError, LoginPatch, LoginView, MailboxCreate, MailboxView
from mailwarden_runtime.crypto import KeyRing
from mailwarden_runtime.mongo import Document

CLIENT_FIELDS = (
    "email",
    "profile_id",
    "incoming_delivery",
    "outgoing_delivery",
    "act_delivery",
    "process_email_received_after",
)


def new_mailbox_id() -> str:
    return f"mbx_{uuid.uuid4().hex[:16]}"


def new_document(req: MailboxCreate, ring: KeyRing, now: datetime, destination: str | None) -> Document:
    """A new mailbox; its logins record ``destination``, the fingerprint of the profile's server."""
    mailbox_id = req.mailbox_id or new_mailbox_id()
    doc: Document = {
        "_id": mailbox_id,
        "email": req.email,
        "owner": req.owner.model_dump(mode="json"),
        "profile_id": req.profile_id,
        "incoming_delivery": req.incoming_delivery.value,
        "outgoing_delivery": req.outgoing_delivery.value,
        "act_delivery": req.act_delivery.value,
        "process_email_received_after": req.process_email_received_after,
        "approval": "pending",
        "active": True,
        "credentials": {},
        "logins": {},
        "incoming_status": TestStatus.NOT_RUN.value,
        "outgoing_status": TestStatus.NOT_RUN.value,
        "act_status": TestStatus.NOT_APPLICABLE.value,
        "enabled_incoming": False,
        "enabled_outgoing": False,
        "test_scheduled": False,
        "pending_test_id": None,
        "pending_attempt": None,
        "pending_job_id": None,
        "pending_directions": [],
        "last_test_id": None,
        "retry_count": 0,
        "next_retry_at": None,
        "last_test_completed_at": None,
        "last_error": None,
        "disabled_reason": None,
        "warnings": [],
        "version": 1,
        "created_at": now,
        "updated_at": now,
    }
    for direction, login in ((INCOMING, req.credentials), (OUTGOING, req.outgoing_credentials)):
        if login is not None:
            doc["credentials"][direction] = seal_login(
                ring, mailbox_id, direction, login.username, login.password
            )
            doc["logins"][direction] = {
                "username": login.username,
                "password_updated_at": now,
                "destination": destination,
            }
    return doc


def patch_login(
    ring: KeyRing,
    doc: Document,
    direction: str,
    patch: LoginPatch | None,
    now: datetime,
    destination: str | None,
    stored_usable: bool,
) -> tuple[Any, Any]:
    """New (ciphertext, login view) of one direction; ``patch`` None removes the login.

    A stored password is carried over only while ``stored_usable`` (the server it was entered for
    is still the profile's): otherwise the request must give the password again.
    """
    mailbox_id = doc["_id"]
    if patch is None:
        return None, None
    stored = (doc.get("credentials") or {}).get(direction)
    old_user: str | None = None
    old_password = None
    if stored is not None and (patch.username is None or patch.password is None):
        old_user, old_password = open_login(ring, mailbox_id, direction, stored)
        if not stored_usable:
            old_password = None
    username = patch.username or old_user
    password = patch.password or old_password
    if username is None:
        raise ValueError("username")
    if password is None:
        raise ValueError("password")
    login = (doc.get("logins") or {}).get(direction) or {}
    changed_at = now if patch.password is not None else login.get("password_updated_at", now)
    return (
        seal_login(ring, mailbox_id, direction, username, password),
        {
            "username": username,
            "password_updated_at": changed_at,
            "destination": destination if patch.password is not None or stored_usable else None,
        },
    )


def _login_view(doc: Document, direction: str) -> LoginView | None:
    login = (doc.get("logins") or {}).get(direction)
    if login is None:
        return None
    return LoginView(
        username=login.get("username"),
        has_password=(doc.get("credentials") or {}).get(direction) is not None,
        password_updated_at=login.get("password_updated_at"),
    )


def to_view(doc: Document) -> MailboxView:
    last_error = doc.get("last_error")
    return MailboxView(
        mailbox_id=doc["_id"],
        email=doc["email"],
        owner=Owner.model_validate(doc["owner"]),
        profile_id=doc.get("profile_id"),
        incoming_delivery=DeliveryMethod(doc["incoming_delivery"]),
        outgoing_delivery=DeliveryMethod(doc["outgoing_delivery"]),
        act_delivery=DeliveryMethod(doc["act_delivery"]),
        process_email_received_after=doc.get("process_email_received_after"),
        approval=doc["approval"],
        active=doc["active"],
        credentials=_login_view(doc, INCOMING) or LoginView(),
        outgoing_credentials=_login_view(doc, OUTGOING),
        incoming_status=TestStatus(doc["incoming_status"]),
        outgoing_status=TestStatus(doc["outgoing_status"]),
        act_status=TestStatus(doc["act_status"]),
        enabled_incoming=doc["enabled_incoming"],
        enabled_outgoing=doc["enabled_outgoing"],
        test_scheduled=doc["test_scheduled"],
        pending_test_id=doc.get("pending_test_id"),
        retry_count=doc["retry_count"],
        postponed_until=doc.get("next_retry_at"),
        last_test_completed_at=doc.get("last_test_completed_at"),
        last_error=LastError.model_validate(last_error) if last_error else None,
        disabled_reason=doc.get("disabled_reason"),
        warnings=[TestWarning.model_validate(w) for w in doc.get("warnings") or []],
        version=doc["version"],
        created_at=doc["created_at"],
        updated_at=doc["updated_at"],
    )


def to_snapshot(doc: Document) -> MailboxSnapshot:
    return MailboxSnapshot(
        mailbox_id=doc["_id"],
        email=doc["email"],
        owner=Owner.model_validate(doc["owner"]),
        profile_id=doc.get("profile_id"),
        incoming_delivery=DeliveryMethod(doc["incoming_delivery"]),
        outgoing_delivery=DeliveryMethod(doc["outgoing_delivery"]),
        act_delivery=DeliveryMethod(doc["act_delivery"]),
        approval=doc["approval"],
        active=doc["active"],
        has_password=(doc.get("credentials") or {}).get(INCOMING) is not None,
        version=doc["version"],
        updated_at=doc["updated_at"],
    )


def owner_requires_approval(owner: Document, approved_users_only: bool, approved_queues_only: bool) -> bool:
    return approved_users_only if owner.get("kind") == "user" else approved_queues_only
