"""Webhook deliveries: signed POSTs, retried with exponential backoff, every attempt recorded.

Every URL goes through the egress policy shared with the mail clients (``mailwarden_mailnet``):
checked when registered and again at each delivery, which connects to the address it checked.
A target that is denied, does not resolve, refuses or never answers is one same error to the API
caller (``no answer``): the deliveries list is no port scanner. Logs keep the precise code.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from datetime import UTC, datetime, timedelta

from alert_svc.channels.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from alert_svc.channels.worker import PollingWorker
from alert_svc.config import Settings
from alert_svc.store.webhooks import Attempt, DeliveryDoc, WebhookDoc, WebhookStore
from mailwarden_mailnet.errors import NetError
from mailwarden_mailnet.http_egress import HostLimiter, HttpEgress, UrlRefused
from mailwarden_mailnet.policy import EgressPolicy, parse_networks
from mailwarden_mailnet.resolve import Resolver, SystemResolver
from mailwarden_runtime.crypto import KeyRing, SealError
from mailwarden_runtime.documents import fields
from mailwarden_runtime.http import DomainError

log = logging.getLogger(__name__)
BATCH = 50


NO_ANSWER = "no answer from the receiver"
ALLOW_SETTING = "MW_ALERT_WEBHOOK_ALLOW_NETWORKS"


def secret_aad(webhook_id: str) -> str:
    return f"webhook:{webhook_id}"


def webhook_egress(settings: Settings, resolver: Resolver | None = None) -> HttpEgress:
    """The egress every webhook URL passes, at registration and at each delivery."""
    s = settings
    context = ssl.create_default_context(cafile=s.alert_webhook_ca_file or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return HttpEgress(
        EgressPolicy(parse_networks(s.alert_webhook_allow_networks), s.alert_webhook_ports, ALLOW_SETTING),
        resolver or SystemResolver(),
        HostLimiter(s.alert_webhook_per_host, s.alert_webhook_concurrency),
        deadline_s=s.alert_webhook_timeout_s,
        max_response_bytes=s.alert_webhook_max_response_kb * 1024,
        ssl_context=context,
    )


async def admit_url(egress: HttpEgress, url: str) -> None:
    """Refuse a URL the egress policy would not call, in words that do not tell why (422 on ``url``).

    A private address, a name that does not resolve and a port not allowed read alike: the API
    tells nothing about the inside network. The allowed ports are no secret and are named.
    """
    try:
        await egress.admit(url)
    except (UrlRefused, NetError) as exc:
        log.info("webhook URL refused", extra={"reason": str(exc)})
        ports = ", ".join(str(p) for p in egress.policy.allowed_ports)
        raise DomainError(
            422,
            f"not a webhook target this service may call: http(s) on port {ports}, with a host that"
            " resolves to public addresses",
            "url",
        ) from None


class WebhookWorker(PollingWorker):
    name = "alert-webhooks"

    def __init__(self, repo: WebhookStore, settings: Settings, keys: KeyRing, egress: HttpEgress) -> None:
        super().__init__(settings.alert_channel_poll_s)
        self.repo = repo
        self.settings = settings
        self.keys = keys
        self.egress = egress

    def backoff(self, attempts: int) -> float:
        s = self.settings
        return float(min(s.alert_webhook_backoff_s * 2 ** (attempts - 1), s.alert_webhook_backoff_max_s))

    async def run_once(self) -> None:
        now = datetime.now(UTC)
        due = await self.repo.due_deliveries(now, BATCH)
        hooks: dict[str, WebhookDoc | None] = {}
        for wid in {d.webhook_id for d in due}:
            hooks[wid] = await self.repo.get_webhook(wid)
        # The whole delivery has a deadline (slot wait included), so the lease outlives it.
        until = now + timedelta(seconds=self.settings.alert_webhook_timeout_s + 30)
        leased: list[tuple[DeliveryDoc, datetime]] = []
        for d in due:
            lease = await self.repo.lease_delivery(d, until)
            if lease is not None:
                leased.append((d, lease))
        await asyncio.gather(*(self.deliver(d, lease, hooks.get(d.webhook_id)) for d, lease in leased))

    async def deliver(self, delivery: DeliveryDoc, lease: datetime, hook: WebhookDoc | None) -> None:
        attempts = delivery.attempts + 1
        started = datetime.now(UTC)
        status: int | None = None
        error: str | None = None
        if hook is None:
            error = "webhook deleted"
        else:
            try:
                secret = self.keys.open(hook.secret, secret_aad(hook.id))
            except SealError:
                secret = None
                error = "webhook secret cannot be opened (key ring)"
            if secret is not None:
                body = delivery.body.encode()
                ts = int(time.time())
                headers = {
                    "Content-Type": "application/json",
                    "User-Agent": "mailwarden-alert-svc",
                    TIMESTAMP_HEADER: str(ts),
                    SIGNATURE_HEADER: sign(secret, ts, body),
                    "X-Mailwarden-Event-Id": delivery.event_id,
                    "X-Mailwarden-Delivery-Id": delivery.id,
                }
                try:
                    reply = await self.egress.post(hook.url, body, headers)
                    status = reply.status
                    if not 200 <= status < 300:
                        error = f"HTTP {status}"
                except NetError as exc:
                    error = NO_ANSWER
                    log.info("webhook not answered", extra={"delivery": delivery.id, "code": exc.code.value})
                except Exception:  # a bug must cost one attempt, not a lease that never records one
                    error = NO_ANSWER
                    log.exception("webhook delivery crashed", extra={"delivery": delivery.id})
        finished = datetime.now(UTC)
        duration_ms = round((finished - started).total_seconds() * 1000, 1)
        attempt = Attempt(at=started, status=status, error=error, duration_ms=duration_ms)
        changes = fields(DeliveryDoc, last_status=status, last_error=error, last_attempt_at=started)
        if error is None:
            changes |= fields(DeliveryDoc, state="delivered", delivered_at=finished)
        elif hook is None or attempts >= self.settings.alert_webhook_max_attempts:
            changes |= fields(DeliveryDoc, state="failed")
            log.warning("webhook delivery failed for good", extra={"delivery": delivery.id, "error": error})
        else:
            retry_at = finished + timedelta(seconds=self.backoff(attempts))
            changes |= fields(DeliveryDoc, next_attempt_at=retry_at, lease_until=retry_at)
        if not await self.repo.delivery_attempt(delivery, lease, changes, attempt):
            log.warning("webhook attempt not recorded: the lease was lost", extra={"delivery": delivery.id})
