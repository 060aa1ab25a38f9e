"""Timed steps: each step runs under its own deadline and is recorded with its facts or its code."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from contracts.errors import WARNING_MESSAGES, ErrorCode, WarningCode
from contracts.models import Fact, StepResult, TestWarning
from mailwarden_mailnet.classify import classify_exception
from mailwarden_mailnet.errors import NetError
from tester_svc import metrics

Facts = dict[str, Fact | list[str]]
MAX_DETAIL = 300


def clean_detail(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Printable, short, and without any of ``secrets`` (a server may echo what we sent)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    return text[:MAX_DETAIL]


class Trace:
    """The steps and warnings of one direction of one test."""

    def __init__(self, protocol: str, secrets: tuple[str, ...] = ()) -> None:
        self.protocol = protocol
        self.steps: list[StepResult] = []
        self.warnings: list[TestWarning] = []
        self.current: str | None = None
        self.secrets = secrets

    def warn(self, code: WarningCode) -> None:
        if all(w.code is not code for w in self.warnings):
            self.warnings.append(TestWarning(code=code, message=WARNING_MESSAGES[code]))

    def record(
        self,
        name: str,
        ok: bool,
        started: float,
        facts: Facts,
        code: ErrorCode | None = None,
        detail: str | None = None,
    ) -> None:
        elapsed = time.monotonic() - started
        if code is ErrorCode.CERT_UNTRUSTED and detail:
            detail += "; a private CA is trusted through MW_TESTER_CA_FILE"
        metrics.STEP_SECONDS.labels(protocol=self.protocol, step=name).observe(elapsed)
        self.steps.append(
            StepResult(
                name=name,
                ok=ok,
                duration_ms=round(elapsed * 1000, 3),
                facts=facts,
                error_code=code,
                detail=clean_detail(detail, self.secrets) if detail else None,
            )
        )

    @asynccontextmanager
    async def step(
        self, name: str, timeout_s: float, timeout_code: ErrorCode = ErrorCode.STEP_TIMEOUT
    ) -> AsyncIterator[Facts]:
        """Run the body as step ``name``; a failure is recorded and re-raised as :class:`NetError`."""
        facts: Facts = {}
        started = time.monotonic()
        self.current = name
        try:
            async with asyncio.timeout(timeout_s):
                yield facts
        except asyncio.CancelledError:
            # The whole test's deadline (or shutdown) cut this step short.
            self.record(name, False, started, facts, ErrorCode.TEST_TIMEOUT, "the test ran out of time")
            raise
        except Exception as exc:
            err = classify_exception(exc, timeout_code)
            self.record(name, False, started, facts, err.code, err.detail)
            raise NetError(err.code, err.detail) from None
        self.record(name, True, started, facts)
        self.current = None
