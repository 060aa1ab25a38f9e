"""Webhook deliveries: signed POSTs, retried with exponential backoff, every attempt recorded."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta

import httpx

from alert_svc.channels.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from alert_svc.channels.worker import PollingWorker
from alert_svc.config import Settings
from alert_svc.store.webhooks import Attempt, DeliveryDoc, WebhookDoc, WebhookStore
from mailwarden_runtime.crypto import KeyRing, SealError
from mailwarden_runtime.mongo import Document

log = logging.getLogger(__name__)
BATCH = 50


def secret_aad(webhook_id: str) -> str:
    return f"webhook:{webhook_id}"


class WebhookWorker(PollingWorker):
    name = "alert-webhooks"

    def __init__(self, repo: WebhookStore, settings: Settings, keys: KeyRing) -> None:
        super().__init__(settings.alert_channel_poll_s)
        self.repo = repo
        self.settings = settings
        self.keys = keys
        self._client: httpx.AsyncClient | None = None

    async def stop(self) -> None:
        await super().stop()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def backoff(self, attempts: int) -> float:
        s = self.settings
        return float(min(s.alert_webhook_backoff_s * 2 ** (attempts - 1), s.alert_webhook_backoff_max_s))

    async def run_once(self) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self.settings.alert_webhook_timeout_s, follow_redirects=False
            )
        now = datetime.now(UTC)
        due = await self.repo.due_deliveries(now, BATCH)
        hooks: dict[str, WebhookDoc | None] = {}
        for wid in {d.webhook_id for d in due}:
            hooks[wid] = await self.repo.get_webhook(wid)
        until = now + timedelta(seconds=self.settings.alert_webhook_timeout_s + 30)
        leased = [d for d in due if await self.repo.lease_delivery(d, until)]
        await asyncio.gather(*(self.deliver(d, hooks.get(d.webhook_id)) for d in leased))

    async def deliver(self, delivery: DeliveryDoc, hook: WebhookDoc | None) -> None:
        assert self._client is not None
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
                    response = await self._client.post(hook.url, content=body, headers=headers)
                    status = response.status_code
                    if not 200 <= status < 300:
                        error = f"HTTP {status}"
                except httpx.HTTPError as exc:
                    error = type(exc).__name__
        finished = datetime.now(UTC)
        duration_ms = round((finished - started).total_seconds() * 1000, 1)
        attempt = Attempt(at=started, status=status, error=error, duration_ms=duration_ms)
        changes: Document = {"last_status": status, "last_error": error, "last_attempt_at": started}
        if error is None:
            changes |= {"state": "delivered", "delivered_at": finished}
        elif hook is None or attempts >= self.settings.alert_webhook_max_attempts:
            changes |= {"state": "failed"}
            log.warning("webhook delivery failed for good", extra={"delivery": delivery.id, "error": error})
        else:
            retry_at = finished + timedelta(seconds=self.backoff(attempts))
            changes |= {"next_attempt_at": retry_at, "lease_until": retry_at}
        await self.repo.delivery_attempt(delivery.id, changes, attempt)
