"""sender-svc's operations, each declared once and served on HTTP and NATS request-reply."""

from __future__ import annotations

from fastapi import APIRouter

from contracts.outgoing import SendEmailRequested
from mailwarden_runtime.auth import require_mailbox
from mailwarden_runtime.auth.context import current_actor
from mailwarden_runtime.http import DomainError
from mailwarden_runtime.operations import Operation, serve
from mailwarden_runtime.service import ServiceRuntime
from mailwarden_runtime.tracing import current_correlation_id
from sender_svc.models import SendLookup, SendStatus
from sender_svc.store.sends import SendStore
from sender_svc.submit import Submission

MAIL = ("mail",)

SEND = Operation(
    name="send",
    method="POST",
    path="/sends",
    input=SendEmailRequested,
    output=SendStatus,
    permission="mail:send",
    summary="Send one mail from a mailbox (queued; the same idempotency key answers the first send)",
    docs=(
        "Refused with the field at fault, nothing queued, when the mailbox may not send now or the "
        "message cannot go (addresses, attachments, size). The outcome is published as EmailSent, "
        "EmailSendFailed or EmailSendUncertain on mailwarden.send.*.<mailbox id> and shown by `get`."
    ),
    errors={
        404: "No such mailbox",
        409: (
            "The mailbox may not send now (inactive, not approved, not enabled for outgoing email, "
            "outgoing delivery not server-side sync, no login), or the key was used for another message"
        ),
        422: "Invalid input: bad addresses, headers, attachments, or over the size limit",
    },
    status_code=202,
    tags=MAIL,
    owner_scoped=True,  # an integration sends only as the mailboxes granted to its token
)
GET = Operation(
    name="get",
    method="GET",
    path="/sends/{mailbox_id}/{idempotency_key}",
    input=SendLookup,
    output=SendStatus,
    permission="mail:read",
    summary="Where one send stands, with its outcome",
    errors={404: "No send with this key for this mailbox"},
    tags=MAIL,
    owner_scoped=True,
)
OPERATIONS = (SEND, GET)


def serve_operations(runtime: ServiceRuntime, submission: Submission, sends: SendStore) -> APIRouter:
    async def send(req: SendEmailRequested) -> SendStatus:
        require_mailbox("mail:send", req.mailbox_id, None)  # granted mailboxes only (403)
        doc, duplicate = await submission.submit(req, current_correlation_id(), current_actor())
        return SendStatus.of(doc, duplicate)

    async def get(req: SendLookup) -> SendStatus:
        require_mailbox("mail:read", req.mailbox_id, None)
        doc = await sends.send(req.mailbox_id, req.idempotency_key)
        if doc is None:
            raise DomainError(404, "no send with this key for this mailbox", "idempotency_key")
        return SendStatus.of(doc)

    return serve(runtime, [SEND.bind(send), GET.bind(get)])
