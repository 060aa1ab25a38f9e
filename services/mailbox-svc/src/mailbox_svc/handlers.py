"""Event handlers: read models of profiles and org settings, and the policy on TestCompleted.

All are idempotent: read models keep the highest version, a test run is stored once by test id, and
a mailbox applies a result only while that test id is its pending one.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any

from contracts.envelope import Envelope
from contracts.errors import ErrorCode
from contracts.events import (
    EmailSettingsChanged,
    Event,
    ProfileCreated,
    ProfileDeleted,
    ProfileUpdated,
    TestCompleted,
)
from mailbox_svc.clock import utcnow
from mailbox_svc.policy import Decision, RetryPolicy, decide, outcome
from mailbox_svc.repository import Repository
from mailwarden_runtime.outbox import outbox_entry, with_outbox

log = logging.getLogger(__name__)

MAX_RACES = 5


class Handlers:
    def __init__(
        self,
        repo: Repository,
        retry: RetryPolicy,
        envelop: Callable[[Event, str | None], Envelope[Any]],
        wake_relay: Callable[[], None],
        on_job_result: Callable[[str], None],
        rng: random.Random | None = None,
    ) -> None:
        self.repo = repo
        self.retry = retry
        self.envelop = envelop
        self.wake_relay = wake_relay
        self.on_job_result = on_job_result
        self.rng = rng or random.Random()

    async def profile_created(self, env: Envelope[ProfileCreated]) -> None:
        await self.repo.upsert_profile(env.data.profile)

    async def profile_updated(self, env: Envelope[ProfileUpdated]) -> None:
        await self.repo.upsert_profile(env.data.profile)

    async def profile_deleted(self, env: Envelope[ProfileDeleted]) -> None:
        await self.repo.delete_profile(env.data.profile_id)

    async def settings_changed(self, env: Envelope[EmailSettingsChanged]) -> None:
        await self.repo.upsert_settings(env.data.settings)

    async def test_completed(self, env: Envelope[TestCompleted]) -> None:
        result = env.data
        mailbox_id = result.mailbox.mailbox_id
        now = utcnow()
        doc = await self.repo.get(mailbox_id)
        pending = doc is not None and doc.get("pending_test_id") == result.test_id
        job_id = (doc or {}).get("pending_job_id") if pending else None
        job_id = job_id or result.job_id
        settings = await self.repo.get_settings()
        decision = decide(doc, result, settings, self.retry, now, self.rng) if doc and pending else None
        await self.repo.record_run(
            {
                "_id": result.test_id,
                "mailbox_id": mailbox_id,
                "attempt": result.attempt,
                "job_id": job_id,
                "outcome": run_outcome(result, decision),
                "disabled_reason": decision.updates["disabled_reason"] if decision else None,
                "received_at": now,
                "result": result.model_dump(mode="json"),
            }
        )
        if job_id:
            self.on_job_result(job_id)
        for _ in range(MAX_RACES):
            if doc is None or doc.get("pending_test_id") != result.test_id:
                log.debug("result is not the pending test: stored only", extra={"test_id": result.test_id})
                return
            decision = decide(doc, result, settings, self.retry, now, self.rng)
            entry = outbox_entry(self.envelop(decision.event, env.correlation_id))
            update = with_outbox(
                {"$set": {**decision.updates, "updated_at": now}, "$inc": {"version": 1}}, [entry]
            )
            applied = await self.repo.update_if(
                mailbox_id, doc["version"], update, {"pending_test_id": result.test_id}
            )
            if applied:
                self.wake_relay()
                log.info(
                    "test result applied",
                    extra={
                        "mailbox_id": mailbox_id,
                        "test_id": result.test_id,
                        "outcome": run_outcome(result, decision),
                        "retry": bool(decision.retry_directions),
                    },
                )
                return
            doc = await self.repo.get(mailbox_id)
        raise RuntimeError("mailbox kept changing while applying a test result")


def run_outcome(result: TestCompleted, decision: Decision | None) -> str:
    """The result's outcome, except that a passing but unapproved mailbox says so."""
    code = outcome(result)
    if code == "success" and decision is not None:
        if decision.event.disabled_reason is ErrorCode.MAILBOX_NOT_APPROVED:
            return ErrorCode.MAILBOX_NOT_APPROVED.value
    return code
