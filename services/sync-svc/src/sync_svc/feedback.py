"""EmailTracked and EmailRejected: what the consuming systems did with each published message.

The answers about a published message (``answers``, ``_id`` = the EmailReceived's id, written only
if the message is in the mailbox's ledger) keep the first ``EmailTracked`` (``tracked``: system, record reference, when) and the first ``EmailRejected``
(``rejected``: system, reason, when) of that message. The mailbox's sync state counts both
(``messages_tracked``, ``messages_rejected``), counted from ``answers``, so a redelivered or repeated
answer never counts twice. A tracked message is never moved to the Undeliverable folder: a system
took it in, so another system's rejection does not make it undeliverable (a rejection handled
before the message was tracked has moved it already; the ledger keeps both answers).
"""

from __future__ import annotations

import logging

from contracts.email import EmailRejected, EmailTracked
from contracts.envelope import Envelope
from sync_svc.documents import Feedback
from sync_svc.store.answers import AnswerStore
from sync_svc.undeliverable import Undeliverable

log = logging.getLogger(__name__)


class Tracked:
    """``EmailTracked`` → the ledger entry marked tracked (the first answer is kept)."""

    def __init__(self, answers: AnswerStore) -> None:
        self.answers = answers

    async def __call__(self, env: Envelope[EmailTracked]) -> None:
        tracked = env.data
        answer = Feedback(system=tracked.system, note=tracked.record_ref, at=env.occurred_at)
        if not await self.answers.mark_feedback(str(tracked.email_id), tracked.mailbox_id, "tracked", answer):
            log.info(
                "EmailTracked for a message not published here, or tracked already",
                extra={"mailbox_id": tracked.mailbox_id, "email_id": str(tracked.email_id)},
            )


class Rejected:
    """``EmailRejected`` → the ledger entry marked rejected; the message moved to Undeliverable
    when the profile says so, unless a system tracked it."""

    def __init__(self, answers: AnswerStore, undeliverable: Undeliverable) -> None:
        self.answers = answers
        self.undeliverable = undeliverable

    async def __call__(self, env: Envelope[EmailRejected]) -> None:
        rejected = env.data
        email_id, mailbox_id = str(rejected.email_id), rejected.mailbox_id
        answer = Feedback(system=rejected.system, note=rejected.reason, at=env.occurred_at)
        await self.answers.mark_feedback(email_id, mailbox_id, "rejected", answer)
        entry = await self.answers.ledger_entry(email_id, mailbox_id)
        if entry is None:
            return  # not a message published here
        if entry.tracked is not None:
            log.info(
                "a rejected message was tracked: not moved",
                extra={"mailbox_id": mailbox_id, "email_id": email_id, "tracked_by": entry.tracked.system},
            )
            return
        await self.undeliverable(mailbox_id, entry)
