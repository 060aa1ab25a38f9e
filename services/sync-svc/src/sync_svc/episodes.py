"""Sync failures as events, once per error episode: MailboxSyncFailed, then MailboxSyncRecovered.

An episode starts at the first failed sync of a mailbox and ends at its next successful one. Its
first failure is published, and again whenever the error code changes; repeated failures with
the same code only count (so owners are alerted once, not on every poll). Event ids are derived
from the episode, the failure count and the code, so a replay is dropped by JetStream.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

from contracts.email import MailboxSyncFailed, MailboxSyncRecovered, SyncProtocol
from contracts.envelope import make_envelope
from contracts.errors import ErrorCode
from contracts.models import TestError
from sync_svc import metrics
from sync_svc.documents import Episode, SyncError
from sync_svc.publisher import PublishFn
from sync_svc.store.states import StateStore
from sync_svc.targets import SyncTarget

NAMESPACE = uuid.UUID("f3b1a2d4-6c5e-4f70-8a9b-1c2d3e4f5a6b")


class Episodes:
    def __init__(
        self,
        states: StateStore,
        publish: PublishFn,
        producer: str,
        base_s: float,
        max_s: float,
        rng: random.Random | None = None,
    ) -> None:
        self.states = states
        self.publish = publish
        self.producer = producer
        self.base_s = base_s
        self.max_s = max_s
        self.rng = rng or random.Random()

    def backoff_s(self, failures: int) -> float:
        delay: float = min(self.max_s, self.base_s * 2.0 ** min(failures - 1, 20))
        return delay * (1 + self.rng.uniform(0, 0.2))

    async def failed(
        self, target: SyncTarget, protocol: SyncProtocol, code: ErrorCode, step: str, detail: str
    ) -> float:
        """Record a failed sync; publish when it opens an episode or changes its code. The wait before retrying."""
        metrics.ERRORS.labels(code=code.value).inc()
        now = datetime.now(UTC)
        episode = (await self.states.get_state(target.mailbox_id)).episode
        new = episode is None
        episode_id = uuid.uuid4() if episode is None else uuid.UUID(episode.id)
        failures = (0 if episode is None else episode.failures) + 1
        first = now if episode is None else episode.first_failed_at
        delay = self.backoff_s(failures)
        changed = episode is not None and episode.code != code.value
        await self.states.update_state(
            target.mailbox_id,
            {
                "episode": Episode(
                    id=str(episode_id), code=code.value, failures=failures, first_failed_at=first
                ),
                "last_error": SyncError(code=code.value, step=step, detail=detail[:300], at=now),
            },
        )
        if new or changed:
            event = MailboxSyncFailed(
                mailbox=target.ref,
                protocol=protocol,
                error=TestError.of(code, step),
                episode_id=episode_id,
                failures=failures,
                first_failed_at=first,
                next_attempt_at=now + timedelta(seconds=delay),
            )
            event_id = uuid.uuid5(NAMESPACE, f"{episode_id}:{failures}:{code.value}")
            await self.publish(make_envelope(event, self.producer, event_id=event_id), event.SUBJECT)
        return delay

    async def succeeded(self, target: SyncTarget, protocol: SyncProtocol) -> None:
        """A sync went through: close the episode, if one was open."""
        episode = (await self.states.get_state(target.mailbox_id)).episode
        if episode is None:
            return
        now = datetime.now(UTC)
        event = MailboxSyncRecovered(
            mailbox=target.ref,
            protocol=protocol,
            episode_id=uuid.UUID(episode.id),
            failures=episode.failures,
            first_failed_at=episode.first_failed_at,
            recovered_at=now,
        )
        event_id = uuid.uuid5(NAMESPACE, f"{episode.id}:recovered")
        await self.publish(make_envelope(event, self.producer, event_id=event_id), event.SUBJECT)
        await self.states.update_state(target.mailbox_id, {"episode": None, "recovered_at": now})
