"""The latest outcome of each mailbox direction: what grouping and the majority alert count on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from pymongo import ASCENDING, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from mailwarden_runtime.documents import Stored, fields
from mailwarden_runtime.mongo import Document

DUPLICATE_KEY = 11000


class FailureDoc(Stored):
    """The latest outcome of one mailbox direction (``_id`` ``<mailbox>|<direction>``): stored
    when it fails, cleared (``failing`` false, no code) by the next success."""

    profile_id: str
    mailbox_id: str
    email: str
    direction: str
    failing: bool
    code: str | None = None
    failed_at: datetime | None = None
    at: datetime
    """When the outcome was tested: an older one never overwrites a newer one."""


class FailingState(Stored):
    """Only whether a record is failing: what a success reads before it clears one."""

    failing: bool = False


class FailingMailbox(Stored):
    """Only a failing record's mailbox and its address: what grouping and the majority count read."""

    mailbox_id: str
    email: str = ""


_OUTCOME = frozenset(FailureDoc.model_fields) - {"id"}
"""What a failure sets (the ``_id`` comes from the filter)."""


class FailureStore:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.failures: AsyncCollection[Document] = db["mailbox_failures"]

    async def ensure_indexes(self) -> None:
        await self.failures.create_index([("profile_id", ASCENDING), ("failing", ASCENDING)])

    async def record_outcomes(
        self,
        mailbox_id: str,
        email: str,
        profile_id: str,
        outcomes: Sequence[tuple[str, str | None]],
        at: datetime,
    ) -> None:
        """The latest outcome of each direction of one mailbox (code None: it works), in one write.

        Only failing records are ever read (grouping and the majority count), so a success writes
        only where a failing record is stored: a conditional update that matches no document
        writes none, and a healthy mailbox's tests cost no document here. A failure is stored
        (upserted) unless a newer outcome of that direction is stored already; a success that found
        nothing to clear leaves no mark, so a failure redelivered after it counts until the
        mailbox's next success (as its alert does: alerts are raised in delivery order).
        """
        await self._write([_outcome_op(mailbox_id, email, profile_id, d, code, at) for d, code in outcomes])

    async def record_many(
        self, batch: Sequence[tuple[str, str, str, Sequence[tuple[str, str | None]], datetime]]
    ) -> None:
        """``record_outcomes`` of many mailboxes (mailbox, email, profile, outcomes, at) in one write."""
        await self._write(
            [
                _outcome_op(mailbox_id, email, profile_id, direction, code, at)
                for mailbox_id, email, profile_id, outcomes, at in batch
                for direction, code in outcomes
            ]
        )

    async def _write(self, outcomes: list[UpdateOne | _Clear]) -> None:
        """The upserts, and the clears of those records that are failing now (read first, by id).

        A clear is a conditional update that matches nothing on a healthy mailbox, yet SecantusDB
        plans each one like a write (0.5-0.7 ms of its CPU per clear, micro-run; a read of 128 ids
        0.02 ms per id): two per test result. Reading first changes no outcome: a clear that finds no
        failing record writes nothing either way.
        """
        clears = [o for o in outcomes if isinstance(o, _Clear)]
        ops = [o for o in outcomes if isinstance(o, UpdateOne)]
        if clears:
            found = self.failures.find({"_id": {"$in": [c.key for c in clears]}}, {"failing": 1})
            states = [FailingState.model_validate(d) async for d in found]
            failing = {state.id for state in states if state.failing}
            ops += [c.op() for c in clears if c.key in failing]
        if not ops:
            return
        try:
            await self.failures.bulk_write(ops, ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors") or []
            if any(e.get("code") != DUPLICATE_KEY for e in errors) or exc.details.get("writeConcernErrors"):
                raise
            # duplicate keys: a newer outcome of that direction is stored already

    async def failing_mailboxes(
        self, profile_id: str, direction: str, code: str, since: datetime
    ) -> list[tuple[str, str]]:
        docs = await self.failures.find(
            {
                "profile_id": profile_id,
                "failing": True,
                "direction": direction,
                "code": code,
                "failed_at": {"$gte": since},
            }
        ).to_list(None)
        return sorted((f.mailbox_id, f.email) for f in (FailingMailbox.model_validate(d) for d in docs))

    async def failed_mailbox_count(self, profile_id: str, since: datetime) -> int:
        docs = await self.failures.find(
            {"profile_id": profile_id, "failing": True, "failed_at": {"$gte": since}}, {"mailbox_id": 1}
        ).to_list(None)
        return len({FailingMailbox.model_validate(d).mailbox_id for d in docs})


@dataclass(frozen=True)
class _Clear:
    """A success of one direction: clears its record if that record is failing (and not newer)."""

    key: str
    at: datetime

    def op(self) -> UpdateOne:
        return UpdateOne(
            {"_id": self.key, "failing": True, "at": {"$lte": self.at}},
            {"$set": fields(FailureDoc, failing=False, at=self.at), "$unset": {"code": "", "failed_at": ""}},
        )


def _outcome_op(
    mailbox_id: str, email: str, profile_id: str, direction: str, code: str | None, at: datetime
) -> UpdateOne | _Clear:
    key = f"{mailbox_id}|{direction}"
    if code is None:
        return _Clear(key, at)
    failure = FailureDoc(
        id=key,
        profile_id=profile_id,
        mailbox_id=mailbox_id,
        email=email,
        direction=direction,
        failing=True,
        code=code,
        failed_at=at,
        at=at,
    )
    return UpdateOne(
        {"_id": key, "at": {"$lte": at}}, {"$set": failure.stored(include=_OUTCOME)}, upsert=True
    )
