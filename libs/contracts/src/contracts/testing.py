"""Valid events as another service would publish them, for what plays that service: tests,
benchmarks and chaos runs (like FastStream's ``testing``). No service imports this module.
"""

from __future__ import annotations

from datetime import datetime

from contracts.errors import ErrorCode, WarningCode
from contracts.events import MailboxStatusChanged
from contracts.models import Direction, MailboxRef, TestError, TestStatus, TestWarning


def status_succeeded(
    ref: MailboxRef, test_id: str, warnings: tuple[WarningCode, ...] = ()
) -> MailboxStatusChanged:
    """mailbox-svc's status after a test that passed both ways (with ``warnings``): enabled."""
    return MailboxStatusChanged(
        mailbox=ref,
        test_id=test_id,
        incoming_status=TestStatus.SUCCESS,
        outgoing_status=TestStatus.SUCCESS,
        enabled_incoming=True,
        enabled_outgoing=True,
        warnings=[TestWarning(code=w, message=w.value) for w in warnings],
    )


def status_failed(
    ref: MailboxRef,
    test_id: str,
    code: ErrorCode = ErrorCode.AUTH_FAILED,
    *,
    direction: Direction = Direction.INCOMING,
    retry_at: datetime | None = None,
) -> MailboxStatusChanged:
    """mailbox-svc's status after a test that failed at login one way with ``code``: disabled, or
    waiting for its retry at ``retry_at``."""
    error = TestError.of(code, "auth", "refused")
    incoming = direction is Direction.INCOMING
    return MailboxStatusChanged(
        mailbox=ref,
        test_id=test_id,
        incoming_status=TestStatus.FAILURE if incoming else TestStatus.SUCCESS,
        outgoing_status=TestStatus.SUCCESS if incoming else TestStatus.FAILURE,
        enabled_incoming=False,
        enabled_outgoing=False,
        retry_count=0,
        next_retry_at=retry_at,
        disabled_reason=None if retry_at else code,
        incoming_error=error if incoming else None,
        outgoing_error=None if incoming else error,
    )
