"""mailwarden's public contract: the events other systems publish and subscribe to.

Depends on pydantic only, so any Python system can install it without our runtime.
"""

from contracts.envelope import Envelope, EnvelopeError, make_envelope, parse_envelope
from contracts.errors import CATALOG, ErrorCode, ErrorScope, ErrorSpec, WarningCode
from contracts.events import (
    EVENT_TYPES,
    AlertRaised,
    DeadLettered,
    EmailSettingsChanged,
    Event,
    MailboxApproved,
    MailboxCreated,
    MailboxStatusChanged,
    MailboxUpdated,
    ProfileCreated,
    ProfileDeleted,
    ProfileUpdated,
    TestCompleted,
    TestRequested,
)
from contracts.jobs import TestJobCompleted, TestJobProgress, TestJobStarted

__all__ = [
    "CATALOG",
    "EVENT_TYPES",
    "AlertRaised",
    "DeadLettered",
    "EmailSettingsChanged",
    "Envelope",
    "EnvelopeError",
    "ErrorCode",
    "ErrorScope",
    "ErrorSpec",
    "Event",
    "MailboxApproved",
    "MailboxCreated",
    "MailboxStatusChanged",
    "MailboxUpdated",
    "ProfileCreated",
    "ProfileDeleted",
    "ProfileUpdated",
    "TestCompleted",
    "TestJobCompleted",
    "TestJobProgress",
    "TestJobStarted",
    "TestRequested",
    "WarningCode",
    "make_envelope",
    "parse_envelope",
]
