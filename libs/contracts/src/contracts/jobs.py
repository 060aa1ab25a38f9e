"""Events of bulk test jobs ("Test & Enable all mailboxes of a profile"), published by mailbox-svc.

A job is asynchronous: it starts, reports progress while it expands and while results arrive, and
ends with one summary (completed or cancelled). Subjects live under ``mailwarden.job.`` (stream
MW_TESTS).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from contracts import subjects
from contracts.events import Event
from contracts.models import Frozen, Identifier

JOB_STARTED = f"{subjects.JOBS}.started"
JOB_PROGRESS = f"{subjects.JOBS}.progress"
JOB_COMPLETED = f"{subjects.JOBS}.completed"

JobState = Literal["running", "cancelling", "cancelled", "completed"]
Count = Annotated[int, Field(ge=0)]


class JobProgress(Frozen):
    """Counts of one job: ``failed`` maps an error code to how many mailboxes ended with it."""

    total: Count
    requested: Count = 0
    done: Count = 0
    succeeded: Count = 0
    failed: dict[str, Count] = Field(default_factory=dict)
    refused: dict[str, Count] = Field(default_factory=dict)


class JobEvent(Event):
    """What every event of a job names: the job and the profile whose mailboxes it tests."""

    __test__: ClassVar[bool] = False
    """Its events are named ``Test…``: not test classes."""

    job_id: Identifier
    profile_id: Identifier


class TestJobStarted(JobEvent, subject=JOB_STARTED):
    """A "Test & Enable all mailboxes of a profile" job began, with the number of mailboxes."""

    total: Count
    started_at: datetime


class TestJobProgress(JobEvent, subject=JOB_PROGRESS):
    """A job's progress after each batch: done, succeeded, failed by error code."""

    state: JobState
    progress: JobProgress


class TestJobCompleted(JobEvent, subject=JOB_COMPLETED):
    """The final summary: ``state`` is ``completed`` or ``cancelled``."""

    state: Literal["completed", "cancelled"]
    progress: JobProgress
    started_at: datetime
    finished_at: datetime


__all__ = [
    "JOB_COMPLETED",
    "JOB_PROGRESS",
    "JOB_STARTED",
    "JobProgress",
    "JobState",
    "TestJobCompleted",
    "TestJobProgress",
    "TestJobStarted",
]
