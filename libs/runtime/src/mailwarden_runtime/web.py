"""ASGI middleware: a correlation id and a server span for every HTTP request."""

from __future__ import annotations

from opentelemetry import propagate
from opentelemetry.trace import SpanKind
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mailwarden_runtime.tracing import attached, correlated, tracer

HEADER = b"x-correlation-id"


class CorrelationMiddleware:
    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        incoming = headers.get(HEADER.decode(), "")[:128] or None
        trace_headers = {k: v for k, v in headers.items() if k in propagate.get_global_textmap().fields}
        route = scope.get("path", "")
        with (
            correlated(incoming) as cid,
            attached(trace_headers),
            tracer().start_as_current_span(
                f"{scope.get('method', 'GET')} {route}",
                kind=SpanKind.SERVER,
                attributes={
                    "http.request.method": scope.get("method", ""),
                    "url.path": route,
                    "service.name": self.service,
                },
            ) as span,
        ):

            async def send_with_id(message: Message) -> None:
                if message["type"] == "http.response.start":
                    message.setdefault("headers", []).append((HEADER, cid.encode()))
                    span.set_attribute("http.response.status_code", message.get("status", 0))
                await send(message)

            await self.app(scope, receive, send_with_id)
