"""Structured JSON logs with the service name, and a guard that keeps secrets out of them.

aioimaplib logs every command it sends at DEBUG, LOGIN with its password included; its logger is
pinned to INFO whatever the configured level, and a redacting filter masks known secret shapes.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

from mailwarden_runtime.tracing import current_correlation_id, current_trace_id

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
_PASSWORDISH = re.compile(r"(?i)(\bLOGIN\s+\S+\s+)(\S+)|(\bAUTH\s+(?:PLAIN|LOGIN)\s+)(\S+)|(\bPASS\s+)(\S+)")
CHATTY_LOGGERS = {
    "aioimaplib": logging.INFO,
    "aioimaplib.aioimaplib": logging.INFO,
    "mail.log": logging.WARNING,
}


def redact(text: str) -> str:
    def _mask(m: re.Match[str]) -> str:
        prefix = m.group(1) or m.group(3) or m.group(5) or ""
        return f"{prefix}[redacted]"

    return _PASSWORDISH.sub(_mask, text)


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.args:
            try:
                record.msg = record.msg % record.args
                record.args = None
            except (TypeError, ValueError):
                return True
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        cid = current_correlation_id()
        if cid:
            doc["correlation_id"] = cid
        trace_id = current_trace_id()
        if trace_id:
            doc["trace_id"] = trace_id
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def configure_logging(service: str, level: str = "INFO", as_json: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(service)
        if as_json
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name, floor in CHATTY_LOGGERS.items():
        logging.getLogger(name).setLevel(max(floor, logging.getLevelName(level)))
