"""mailwarden's public contract: the events other systems publish and subscribe to.

Depends on pydantic only, so any Python system can install it without our runtime.
"""

from contracts.access import ApiTokenCreated, ApiTokenRevoked, CredentialKeysRotated
from contracts.alerting import (
    AlertMarkedRead,
    AlertPreferencesChanged,
    AlertsDeleted,
    WebhookRegistered,
    WebhookRemoved,
)
from contracts.email import (
    EmailReceived,
    EmailRejected,
    EmailTracked,
    MailboxResyncRequested,
    MailboxSyncFailed,
    MailboxSyncPaused,
    MailboxSyncRecovered,
    email_event_id,
)
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
from contracts.outgoing import (
    EmailSendFailed,
    EmailSendUncertain,
    EmailSent,
    EmailSentCopy,
    MailboxSendLoginRefused,
    SendEmailRequested,
)

__all__ = [
    "CATALOG",
    "EVENT_TYPES",
    "AlertMarkedRead",
    "AlertPreferencesChanged",
    "AlertRaised",
    "AlertsDeleted",
    "ApiTokenCreated",
    "ApiTokenRevoked",
    "CredentialKeysRotated",
    "DeadLettered",
    "EmailReceived",
    "EmailRejected",
    "EmailSendFailed",
    "EmailSendUncertain",
    "EmailSent",
    "EmailSentCopy",
    "EmailSettingsChanged",
    "EmailTracked",
    "Envelope",
    "EnvelopeError",
    "ErrorCode",
    "ErrorScope",
    "ErrorSpec",
    "Event",
    "MailboxApproved",
    "MailboxCreated",
    "MailboxResyncRequested",
    "MailboxSendLoginRefused",
    "MailboxStatusChanged",
    "MailboxSyncFailed",
    "MailboxSyncPaused",
    "MailboxSyncRecovered",
    "MailboxUpdated",
    "ProfileCreated",
    "ProfileDeleted",
    "ProfileUpdated",
    "SendEmailRequested",
    "TestCompleted",
    "TestJobCompleted",
    "TestJobProgress",
    "TestJobStarted",
    "TestRequested",
    "WarningCode",
    "WebhookRegistered",
    "WebhookRemoved",
    "email_event_id",
    "make_envelope",
    "parse_envelope",
]
