"""Who gets which alert for one MailboxStatusChanged: pure rules, no I/O.

Grouping and the majority alert need counts from the database; the processor applies them to
the profile owner's error drafts that these rules produce.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from alert_svc import texts
from alert_svc.domain import MAILBOX_ENABLED, PROFILE_MAJORITY_FAILURE, Draft
from contracts.errors import CATALOG, ErrorCode, WarningCode
from contracts.events import AlertLevel, MailboxStatusChanged
from contracts.models import Direction, Owner, TestError, TestStatus


@dataclass(frozen=True)
class OrgPolicy:
    """The org settings alert-svc obeys (Dynamics' defaults until EmailSettingsChanged arrives)."""

    alert_levels: frozenset[AlertLevel] = frozenset({"error", "information"})
    notify_mailbox_owner: bool = True


@dataclass(frozen=True)
class Failure:
    direction: Direction
    error: TestError

    @property
    def profile_scope(self) -> bool:
        return CATALOG[self.error.code].scope == "profile"


@dataclass
class FanOut:
    """Drafts for one status event; ``profile_errors`` may still be folded into a group alert."""

    drafts: list[Draft] = field(default_factory=list)
    profile_errors: list[tuple[Failure, Draft]] = field(default_factory=list)


_UNKNOWN = TestError(
    code=ErrorCode.INTERNAL_ERROR,
    step="unknown",
    transient=True,
    scope="mailbox",
    message="no error reported",
)


def failures(event: MailboxStatusChanged) -> list[Failure]:
    out = []
    for direction, status, error in (
        (Direction.INCOMING, event.incoming_status, event.incoming_error),
        (Direction.OUTGOING, event.outgoing_status, event.outgoing_error),
    ):
        if status is TestStatus.FAILURE:
            out.append(Failure(direction, error or _UNKNOWN))
    return out


def succeeded_directions(event: MailboxStatusChanged) -> list[Direction]:
    return [
        d
        for d, s in ((Direction.INCOMING, event.incoming_status), (Direction.OUTGOING, event.outgoing_status))
        if s is TestStatus.SUCCESS
    ]


def is_success(event: MailboxStatusChanged) -> bool:
    return not failures(event) and event.disabled_reason is None and bool(succeeded_directions(event))


def _mailbox_draft(
    event: MailboxStatusChanged,
    recipient: Owner,
    level: AlertLevel,
    code: str,
    text: tuple[str, str, str],
    direction: Direction | None = None,
) -> Draft:
    ref = event.mailbox
    title, message, fix = text
    return Draft(
        recipient, level, "mailbox", code, title, message, fix,
        profile_id=ref.profile_id, mailbox_id=ref.mailbox_id, mailbox_email=ref.email, direction=direction,
    )  # fmt: skip


def fan_out(event: MailboxStatusChanged, policy: OrgPolicy, profile_name: str) -> FanOut:
    ref = event.mailbox
    out = FanOut()
    if event.disabled_reason is ErrorCode.MAILBOX_NOT_APPROVED:
        code = ErrorCode.MAILBOX_NOT_APPROVED
        # Approval is the mailbox's own matter; with owner notification off the profile owner acts.
        who = ref.owner if policy.notify_mailbox_owner else ref.profile_owner
        text = (*texts.not_approved(ref.email), texts.remediation(code))
        out.drafts.append(_mailbox_draft(event, who, "error", code.value, text))
        return out
    for failure in failures(event):
        d, err = failure.direction, failure.error
        enabled = event.enabled_incoming if d is Direction.INCOMING else event.enabled_outgoing
        next_step = texts.outcome(d, enabled, event.next_retry_at, event.retry_count)
        title, fix = texts.error_title(d, ref.email), texts.remediation(err.code)
        if policy.notify_mailbox_owner:
            msg = texts.error_message(
                d, ref.email, err, profile_name, next_step, bystander=failure.profile_scope
            )
            out.drafts.append(_mailbox_draft(event, ref.owner, "error", err.code.value, (title, msg, fix), d))
        msg = texts.error_message(d, ref.email, err, profile_name, next_step, bystander=False)
        draft = _mailbox_draft(event, ref.profile_owner, "error", err.code.value, (title, msg, fix), d)
        out.profile_errors.append((failure, draft))
    if is_success(event) and (event.enabled_incoming or event.enabled_outgoing):
        text = (
            *texts.success(ref.email, event.incoming_status.value, event.outgoing_status.value, profile_name),
            "",
        )
        out.drafts.append(_mailbox_draft(event, ref.owner, "information", MAILBOX_ENABLED, text))
    for warning in warning_codes(event):
        title, message, fix = texts.warning(warning, profile_name)
        out.drafts.append(
            Draft(
                ref.profile_owner,
                "warning",
                "warning",
                warning.value,
                title,
                message,
                fix,
                profile_id=ref.profile_id,
                affected=(ref.mailbox_id,),
                add_affected=True,
            )
        )
    return out


def warning_codes(event: MailboxStatusChanged) -> list[WarningCode]:
    return sorted({w.code for w in event.warnings})


def group_draft(
    profile_error: Draft, code: ErrorCode, profile_name: str, mailboxes: list[tuple[str, str]]
) -> Draft:
    """One profile alert for every mailbox failing with the same profile-scope cause."""
    assert profile_error.direction is not None
    title, message = texts.group(
        profile_error.direction, code, profile_name, [email for _, email in mailboxes]
    )
    return Draft(
        profile_error.recipient,
        "error",
        "group",
        code.value,
        title,
        message,
        texts.remediation(code),
        profile_id=profile_error.profile_id,
        direction=profile_error.direction,
        affected=tuple(mid for mid, _ in mailboxes),
    )


def majority_draft(
    event: MailboxStatusChanged, profile_name: str, failed: int, total: int, window_min: int
) -> Draft:
    title, message, fix = texts.majority(profile_name, failed, total, window_min)
    ref = event.mailbox
    return Draft(
        ref.profile_owner,
        "error",
        "majority",
        PROFILE_MAJORITY_FAILURE,
        title,
        message,
        fix,
        profile_id=ref.profile_id,
    )


def allowed(drafts: Iterable[Draft], policy: OrgPolicy) -> list[Draft]:
    """Record only the levels the org settings ask for."""
    return [d for d in drafts if d.level in policy.alert_levels]
