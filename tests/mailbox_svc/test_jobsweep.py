"""What a job's closing sweep reads (jobsweep.py): the mailboxes not known to have taken its test,
only when this process wrote every batch record of the job; otherwise every mailbox of the profile."""

from __future__ import annotations

import pytest

import mailbox_svc.jobsweep as jobsweep_module
from mailbox_svc.jobsweep import JobSweeps, SweepScope


def test_the_sweep_reads_the_requested_mailboxes_that_did_not_take_the_test() -> None:
    sweeps = JobSweeps()
    sweeps.requesting("j", ["a", "b", "c"])
    sweeps.recorded("j", 1)
    sweeps.requesting("j", ["d"])
    sweeps.recorded("j", 2)
    sweeps.recorded("j", 3)  # the last record: nothing left to request
    sweeps.taken("j", ["a", "c"])
    sweeps.taken("other", ["b"])  # another job's: nothing here
    assert sweeps.scope("j", 3) == SweepScope(frozenset({"b", "d"}))
    sweeps.taken("j", ["b", "d"])
    assert sweeps.scope("j", 3) == SweepScope(frozenset())


def test_a_job_this_process_did_not_expand_whole_is_swept_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    sweeps = JobSweeps()
    assert sweeps.scope("unknown", 2) is None  # a restart, or another replica's job
    sweeps.requesting("j", ["a"])
    sweeps.recorded("j", 1)
    assert sweeps.scope("j", 2) is None  # record 2 was another replica's
    sweeps.recorded("j", 2)
    assert sweeps.scope("j", 2) == SweepScope(frozenset({"a"}))
    monkeypatch.setattr(jobsweep_module, "MAX_LEFT", 0)
    assert sweeps.scope("j", 2) is None  # too many left: one read of the profile is cheaper
    sweeps.forget("j")
    assert sweeps.scope("j", 2) is None


def test_the_jobs_kept_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobsweep_module, "MAX_JOBS", 2)
    sweeps = JobSweeps()
    for job_id in ("j1", "j2", "j3"):
        sweeps.requesting(job_id, ["a"])
        sweeps.recorded(job_id, 1)
    assert sweeps.scope("j1", 1) is None  # dropped: swept whole
    assert sweeps.scope("j3", 1) == SweepScope(frozenset({"a"}))
