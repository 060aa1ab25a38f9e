"""Alert wording, in the style of Dynamics 365's server-side synchronization alerts."""

from __future__ import annotations

from datetime import datetime

from contracts.errors import CATALOG, WARNING_MESSAGES, ErrorCode, WarningCode
from contracts.models import Direction, TestError

_VERB = {Direction.INCOMING: "received", Direction.OUTGOING: "sent"}
_WHAT = {Direction.INCOMING: "incoming", Direction.OUTGOING: "outgoing"}
_INFINITIVE = {Direction.INCOMING: "receive", Direction.OUTGOING: "send"}


def when(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC")


def outcome(direction: Direction, enabled: bool, next_retry_at: datetime | None, retry_count: int) -> str:
    """What happens next: a scheduled retry, or a disabled direction."""
    if next_retry_at is not None:
        return f"A retry is scheduled at {when(next_retry_at)} (retry {retry_count + 1})."
    if not enabled:
        return (
            f"The mailbox has been disabled for {_WHAT[direction]} email; "
            "fix the cause, then run Test & Enable again."
        )
    return "No retry is scheduled."


def error_title(direction: Direction, email: str) -> str:
    return f"Email cannot be {_VERB[direction]} for the mailbox {email}"


def error_message(
    direction: Direction, email: str, error: TestError, profile_name: str, next_step: str, *, bystander: bool
) -> str:
    spec = CATALOG[error.code]
    text = (
        f"Email cannot be {_VERB[direction]} for the mailbox {email} because the {_WHAT[direction]} test "
        f"failed at the '{error.step}' step: {spec.message} (email server profile: {profile_name}). "
        f"{next_step}"
    )
    if bystander:
        text += " The problem lies in the email server profile; its owner has been alerted. No action is required from you."
    return text


def remediation(code: ErrorCode) -> str:
    return CATALOG[code].remediation


def not_approved(email: str) -> tuple[str, str]:
    spec = CATALOG[ErrorCode.MAILBOX_NOT_APPROVED]
    return (
        f"The mailbox {email} is disabled: its email address has not been approved",
        f"The mailbox {email} has been disabled because its email address has not been approved. {spec.message}",
    )


def success(email: str, incoming: str, outgoing: str, profile_name: str) -> tuple[str, str]:
    return (
        f"The mailbox {email} is enabled",
        f"Email can be processed for the mailbox {email}: the configuration with the email server profile "
        f"{profile_name} completed successfully (incoming: {incoming}, outgoing: {outgoing}).",
    )


def group(direction: Direction, code: ErrorCode, profile_name: str, emails: list[str]) -> tuple[str, str]:
    spec = CATALOG[code]
    listed = ", ".join(emails[:20]) + (f" and {len(emails) - 20} more" if len(emails) > 20 else "")
    return (
        f"{len(emails)} mailboxes of the email server profile {profile_name} cannot {_INFINITIVE[direction]} email",
        f"Email cannot be {_VERB[direction]} for {len(emails)} mailboxes of the email server profile "
        f"{profile_name} because of one cause: {spec.message} Affected mailboxes: {listed}.",
    )


def majority(profile_name: str, failed: int, total: int, window_min: int) -> tuple[str, str, str]:
    return (
        f"More than half of the mailboxes of the email server profile {profile_name} failed",
        f"{failed} of the {total} mailboxes of the email server profile {profile_name} failed their "
        f"tests within the last {window_min} minutes.",
        "Check the email server profile and the server it points to; the mailbox alerts name each cause.",
    )


def warning(code: WarningCode, profile_name: str) -> tuple[str, str, str]:
    message = WARNING_MESSAGES[code]
    fixes = {
        WarningCode.CERT_EXPIRING_SOON: "Renew the server's certificate before it expires.",
        WarningCode.PLAINTEXT_LOGIN_OFFERED: "Disable login before STARTTLS on the server.",
        WarningCode.WEAK_TLS: "Enable TLS 1.3 or ECDHE cipher suites on the server.",
        WarningCode.TLS_VERIFICATION_DISABLED: "Turn certificate verification back on for the profile.",
    }
    return (
        f"Email server profile {profile_name}: {message}",
        f"{message} (email server profile: {profile_name})",
        fixes[code],
    )
