"""A job's next mailboxes: the ids are read once per job, and again only when the cursor says so."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import cast

from mailbox_svc.documents import JobDoc
from mailbox_svc.jobqueue import JobMailboxIds
from mailbox_svc.store.mailboxes import MailboxStore


class FakeRepo:
    def __init__(self, ids: list[str]) -> None:
        self.ids = ids
        self.reads: list[str | None] = []

    async def job_mailbox_ids(self, profile_id: str, after: str | None) -> list[str]:
        self.reads.append(after)
        return [i for i in sorted(self.ids) if after is None or i > after]


def job(cursor: str | None, job_id: str = "j1") -> JobDoc:
    return JobDoc.model_validate(
        {"_id": job_id, "profile_id": "p1", "cursor": cursor, "total": 0, "created_at": datetime.now(UTC)}
    )


async def test_ids_are_read_once_and_taken_in_order() -> None:
    repo = FakeRepo([f"m{i}" for i in range(7)])
    queue = JobMailboxIds(cast(MailboxStore, repo))
    assert await queue.next(job(None), 3) == ["m0", "m1", "m2"]
    assert await queue.next(job(None), 3) == ["m0", "m1", "m2"]  # the cursor did not move: same batch
    assert await queue.next(job("m2"), 3) == ["m3", "m4", "m5"]
    assert await queue.next(job("m5"), 3) == ["m6"]
    assert repo.reads == [None]
    repo.ids.append("m7")  # created while the job ran: found when the list runs out
    assert await queue.next(job("m6"), 3) == ["m7"]
    assert await queue.next(job("m7"), 3) == []
    assert repo.reads == [None, "m6", "m7"]


async def test_a_cursor_moved_elsewhere_or_back_reads_again() -> None:
    repo = FakeRepo([f"m{i}" for i in range(6)])
    queue = JobMailboxIds(cast(MailboxStore, repo))
    assert await queue.next(job("m1"), 2) == ["m2", "m3"]
    assert await queue.next(job("m4"), 2) == ["m5"]  # another replica expanded m2..m4: no read needed
    assert await queue.next(job("m0"), 2) == ["m1", "m2"]  # behind what was read: read again
    assert repo.reads == ["m1", "m0"]
    queue.forget("j1")
    assert await queue.next(job("m0"), 1) == ["m1"]
    assert repo.reads == ["m1", "m0", "m0"]
