"""What sending a mail and copying it to the Sent folder both work with, built once per process.

The settings, the store, the attachments, how an event is enveloped and its relay woken, and the
one way out to a customer's server (resolver, TLS contexts, the egress policy, the timeouts of
each step). Each of :class:`~sender_svc.sender.Sender` and :class:`~sender_svc.sent_copy.SentCopies`
has its own login source besides (purpose ``send`` and ``sent_copy``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from contracts.envelope import Envelope
from contracts.events import Event
from mailwarden_mailnet.dial import Timeouts
from mailwarden_mailnet.policy import EgressPolicy
from mailwarden_mailnet.resolve import Resolver
from mailwarden_mailnet.tls import TlsContexts
from sender_svc.attachments import ObjectAttachments
from sender_svc.config import Settings
from sender_svc.store import Stores

Envelop = Callable[[Event, str | None, uuid.UUID, str | None], Envelope[Any]]
"""An event of this service: (event, correlation id, event id, actor: who asked for the send)."""


@dataclass(frozen=True)
class Outbound:
    settings: Settings
    stores: Stores
    attachments: ObjectAttachments
    envelop: Envelop
    wake_relay: Callable[[], None]
    resolver: Resolver
    tls: TlsContexts
    policy: EgressPolicy
    timeouts: Timeouts

    @classmethod
    def build(
        cls,
        settings: Settings,
        stores: Stores,
        attachments: ObjectAttachments,
        envelop: Envelop,
        wake_relay: Callable[[], None],
        resolver: Resolver,
    ) -> Outbound:
        """TLS, policy and timeouts from the settings (``MW_SENDER_CA_FILE``, ``..._ALLOW_NETWORKS``...)."""
        timeouts = Timeouts(
            dns_s=settings.sender_dns_timeout_s,
            step_s=settings.sender_step_timeout_s,
            data_s=settings.sender_data_timeout_s,
        )
        tls = TlsContexts(settings.sender_ca_file)
        policy = EgressPolicy(settings.allow_networks)
        return cls(settings, stores, attachments, envelop, wake_relay, resolver, tls, policy, timeouts)
