"""What a test result does to a mailbox: enable, disable at once, or retry later (pure logic).

Success in a direction enables it (unless the org requires approval the mailbox lacks); a permanent
error disables it at once; a transient one schedules a retry with jittered back-off, and after the
last attempt counts as permanent.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from contracts.eligibility import approved
from contracts.errors import CATALOG, ErrorCode
from contracts.events import MailboxStatusChanged, SettingsSnapshot, TestCompleted
from contracts.models import DirectionResult, TestError, TestStatus
from mailbox_svc.documents import MailboxDoc, TestState
from mailbox_svc.models import LastError


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 10
    interval_s: float = 300.0
    jitter: float = 0.1

    def delay_s(self, rng: random.Random) -> float:
        return self.interval_s * (1 + rng.uniform(-self.jitter, self.jitter))


@dataclass
class Decision:
    state: TestState
    """What the result sets on the mailbox."""
    event: MailboxStatusChanged
    retry_directions: list[str] = field(default_factory=list)


def _logins_resume_at(result: TestCompleted) -> datetime | None:
    """When a login paused by the tester's breaker (``auth_breaker_open``) may be tried again."""
    latest: datetime | None = None
    for res in result.results:
        if res.error is None or res.error.code is not ErrorCode.AUTH_BREAKER_OPEN:
            continue
        for step in res.steps:
            value = step.facts.get("resume_at")
            if isinstance(value, str):
                try:
                    moment = datetime.fromisoformat(value)
                except ValueError:
                    continue
                latest = moment if latest is None else max(latest, moment)
    return latest


def _is_transient(error: TestError) -> bool:
    spec = CATALOG.get(error.code)
    return spec.transient if spec is not None else error.transient


def decide(
    doc: MailboxDoc,
    result: TestCompleted,
    settings: SettingsSnapshot,
    retry: RetryPolicy,
    now: datetime,
    rng: random.Random,
) -> Decision:
    """The new state of ``doc`` after ``result`` (which must be the mailbox's pending test)."""
    attempt = doc.pending_attempt or result.attempt
    may_enable = approved(doc.approval, doc.owner.kind, settings)
    status = {"incoming": doc.incoming_status, "outgoing": doc.outgoing_status}
    enabled = {"incoming": doc.enabled_incoming, "outgoing": doc.enabled_outgoing}
    errors: dict[str, TestError] = {}
    permanent: ErrorCode | None = None
    exhausted: ErrorCode | None = None
    retry_dirs: list[str] = []
    for res in result.results:
        d = res.direction.value
        status[d] = res.status
        if res.status is TestStatus.FAILURE:
            error = res.error or _unknown_error(res)
            errors[d] = error
            if not _is_transient(error):
                enabled[d] = False
                permanent = permanent or error.code
            elif attempt < retry.max_attempts:
                retry_dirs.append(d)
            else:
                enabled[d] = False
                exhausted = exhausted or error.code
        elif res.status is TestStatus.SUCCESS:
            enabled[d] = may_enable
    any_success = any(r.status is TestStatus.SUCCESS for r in result.results)
    disabled_reason: ErrorCode | None = permanent or exhausted
    if disabled_reason is None and any_success and not may_enable:
        disabled_reason = ErrorCode.MAILBOX_NOT_APPROVED
    next_retry_at = now + timedelta(seconds=retry.delay_s(rng)) if retry_dirs else None
    resume_at = _logins_resume_at(result)
    if next_retry_at is not None and resume_at is not None and resume_at > next_retry_at:
        next_retry_at = resume_at  # no retry while the tester's login breaker still holds it back
    if retry_dirs:
        retry_count = attempt
    elif not errors:
        retry_count = 0
    else:
        retry_count = doc.retry_count
    last_error = _last_error(doc.last_error, errors, now)
    warnings = [w for r in result.results for w in r.warnings]
    state = TestState(
        incoming_status=status["incoming"],
        outgoing_status=status["outgoing"],
        enabled_incoming=enabled["incoming"],
        enabled_outgoing=enabled["outgoing"],
        retry_count=retry_count,
        next_retry_at=next_retry_at,
        retry_attempt=attempt + 1 if retry_dirs else None,
        retry_directions=retry_dirs,
        test_scheduled=bool(retry_dirs),
        pending_test_id=None,
        pending_attempt=None,
        pending_job_id=None,
        pending_directions=[],
        last_test_id=result.test_id,
        last_test_completed_at=result.finished_at,
        last_error=last_error,
        disabled_reason=disabled_reason.value if disabled_reason else None,
        warnings=warnings,
    )
    event = MailboxStatusChanged(
        mailbox=result.mailbox,
        test_id=result.test_id,
        incoming_status=status["incoming"],
        outgoing_status=status["outgoing"],
        act_status=doc.act_status,
        enabled_incoming=enabled["incoming"],
        enabled_outgoing=enabled["outgoing"],
        retry_count=retry_count,
        next_retry_at=next_retry_at,
        disabled_reason=disabled_reason,
        incoming_error=errors.get("incoming"),
        outgoing_error=errors.get("outgoing"),
        warnings=warnings,
    )
    return Decision(state=state, event=event, retry_directions=retry_dirs)


def outcome(result: TestCompleted) -> str:
    """``success``, or the error code of the first failing direction (for job counts and history)."""
    for res in result.results:
        if res.status is TestStatus.FAILURE:
            return (res.error or _unknown_error(res)).code.value
    return "success"


def _unknown_error(res: DirectionResult) -> TestError:
    spec = CATALOG[ErrorCode.INTERNAL_ERROR]
    return TestError(
        code=ErrorCode.INTERNAL_ERROR, step="unknown", transient=True, scope=spec.scope, message=spec.message
    )


def _last_error(previous: LastError | None, errors: dict[str, TestError], now: datetime) -> LastError | None:
    if not errors:
        return None
    direction, error = next(iter(errors.items()))
    count = 1
    if previous is not None and previous.code == error.code.value:
        count = previous.count + 1
    return LastError(
        code=error.code.value, message=error.message, direction=direction, count=count, occurred_at=now
    )
