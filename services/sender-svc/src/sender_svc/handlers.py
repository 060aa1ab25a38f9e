"""Event handlers: send requests arriving as events.

The read models the sender decides from (mailboxes, profiles, org settings) are kept by
:func:`mailwarden_runtime.readmodels.follow`. Logins are never kept here: they are asked from
mailbox-svc when connecting (:mod:`mailwarden_mailnet.use_login`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from contracts.envelope import Envelope, make_envelope
from contracts.errors import CATALOG
from contracts.events import (
    FieldError,
)
from contracts.models import TestError
from contracts.outgoing import EmailSendFailed, SendEmailRequested
from contracts.subjects import SEND_FAILED, send_outcome_subject
from sender_svc.submit import Refused, Submission, refusal_id

Publish = Callable[[Envelope[Any], str | None], Awaitable[Any]]


class Handlers:
    def __init__(self, submission: Submission, publish: Publish, producer: str) -> None:
        self.submission = submission
        self.publish = publish
        self.producer = producer

    async def send_requested(self, env: Envelope[SendEmailRequested]) -> None:
        """Queue it; a refusal is answered with EmailSendFailed naming the fields (nothing queued)."""
        await self.send_requested_many([env])

    async def send_requested_many(self, envs: Sequence[Envelope[SendEmailRequested]]) -> None:
        """A fetch of requests queued in one insert; each refusal answered on its own."""
        results = await self.submission.submit_many(
            [(env.data, env.correlation_id, env.actor) for env in envs]
        )
        for env, result in zip(envs, results, strict=True):
            if isinstance(result, Refused):
                await self._refused(env, result)

    async def _refused(self, env: Envelope[SendEmailRequested], refusal: Refused) -> None:
        req = env.data
        spec = CATALOG[refusal.code]
        failed = EmailSendFailed(
            mailbox_id=req.mailbox_id,
            idempotency_key=req.idempotency_key,
            error=TestError(
                code=refusal.code,
                step="submit",
                transient=False,
                scope=spec.scope,
                message=refusal.detail,
            ),
            errors=[FieldError(loc=refusal.field or "body", msg=refusal.detail)],
            failed_at=datetime.now(UTC),
        )
        out = make_envelope(
            failed,
            self.producer,
            correlation_id=env.correlation_id,
            event_id=refusal_id(req.mailbox_id, req.idempotency_key),
            actor=env.actor,
        )
        await self.publish(out, send_outcome_subject(SEND_FAILED, req.mailbox_id))
