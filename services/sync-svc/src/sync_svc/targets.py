"""Which mailboxes are synchronized, and with what: computed from the read models, never stored.

A mailbox is synchronized when it may use its incoming side (:func:`contracts.eligibility.ineligible`:
active, incoming delivery by server-side synchronization, approved where the organisation requires
it, never when rejected, enabled for incoming email by its last test) and its profile is IMAP or POP3. Its login is asked from mailbox-svc when connecting
(:mod:`mailwarden_mailnet.use_login`), never stored here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date

from contracts.eligibility import ineligible
from contracts.events import MailboxSnapshot, ProfileSnapshot, SettingsSnapshot
from contracts.models import Direction, Endpoint, IncomingProtocol, MailboxRef


@dataclass(frozen=True)
class SyncTarget:
    """Everything one mailbox's sync needs; ``fingerprint`` changes when a restart is needed."""

    ref: MailboxRef
    protocol: IncomingProtocol
    endpoint: Endpoint
    verify_tls: bool
    allow_plaintext_auth: bool
    connect_timeout_s: float
    max_connections: int
    poll_interval_s: float
    process_email_from: date | None  # a datetime when the mailbox overrides its profile's day
    delete_after_sync: bool
    move_rejected: bool
    allowed_ports: tuple[int, ...]

    @property
    def mailbox_id(self) -> str:
        return self.ref.mailbox_id

    @property
    def fingerprint(self) -> str:
        parts = (
            self.protocol.value,
            self.endpoint.model_dump_json(),
            str(self.verify_tls),
            str(self.allow_plaintext_auth),
            str(self.connect_timeout_s),
            str(self.poll_interval_s),
            str(self.process_email_from),
            str(self.delete_after_sync),
            ",".join(map(str, self.allowed_ports)),
        )
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]


def target_of(
    mailbox: MailboxSnapshot,
    enabled_incoming: bool,
    profile: ProfileSnapshot | None,
    settings: SettingsSnapshot,
    poll_floor_s: float,
) -> SyncTarget | None:
    """The sync target of one mailbox, or None when it is not to be synchronized."""
    if profile is None or ineligible(mailbox, Direction.INCOMING, enabled_incoming, settings) is not None:
        return None
    if mailbox.profile_id != profile.profile_id:
        return None
    adv = profile.advanced
    return SyncTarget(
        ref=mailbox.ref(profile),
        protocol=profile.incoming_protocol,
        endpoint=profile.incoming,
        verify_tls=adv.verify_tls,
        allow_plaintext_auth=adv.allow_plaintext_auth,
        connect_timeout_s=adv.connect_timeout_s,
        max_connections=adv.max_concurrent_connections,
        poll_interval_s=max(poll_floor_s, adv.min_polling_interval_min * 60.0),
        process_email_from=mailbox.process_email_received_after or adv.process_email_from,
        delete_after_sync=adv.pop3_delete_after_sync,
        move_rejected=adv.move_failed_to_undeliverable,
        allowed_ports=tuple(settings.allowed_ports),
    )
