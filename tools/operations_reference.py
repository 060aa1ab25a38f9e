"""docs/operations.md: every operation of every service, from its one declaration (``<pkg>.api.OPERATIONS``).

Used by tools/gendocs.py. Each operation is checked against the app the service builds: its route
must be served with every declared status in the OpenAPI document, or the generation fails.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI

from mailwarden_runtime.operations import Operation


class OperationsError(RuntimeError):
    """A declared operation is not served as declared."""


def declared(package: str) -> tuple[Operation[Any, Any], ...]:
    """The service's declared operations; none for a service without an ``api`` module."""
    try:
        module = importlib.import_module(f"{package}.api")
    except ModuleNotFoundError as exc:
        if exc.name == f"{package}.api":
            return ()
        raise
    operations: tuple[Operation[Any, Any], ...] = module.OPERATIONS
    return operations


def check_served(service: str, app: FastAPI, operations: Sequence[Operation[Any, Any]]) -> None:
    """Every operation is an HTTP route whose OpenAPI entry lists each status it can answer."""
    paths = app.openapi()["paths"]
    for op in operations:
        entry = paths.get(op.path, {}).get(op.method.lower())
        if entry is None:
            raise OperationsError(f"{service}: {op.name} ({op.method} {op.path}) is declared but not served")
        missing = {str(s) for s in op.statuses()} - set(entry["responses"])
        if missing:
            raise OperationsError(f"{service}: {op.name} lacks statuses {sorted(missing)} in OpenAPI")
        if entry.get("x-rpc-subject") != op.subject(service):
            raise OperationsError(f"{service}: {op.name} is not served on {op.subject(service)}")


def _statuses(op: Operation[Any, Any]) -> str:
    return "<br>".join(f"`{s}` {text}" for s, text in op.statuses().items())


def _http(op: Operation[Any, Any]) -> str:
    return f"`{op.method} {op.path}`"


def operations_md(
    header: str, services: Sequence[tuple[str, Sequence[Operation[Any, Any]]]], table: Any
) -> str:
    parts = [
        header,
        "# Operations\n\n",
        "Every operation is declared once (`mailwarden_runtime.operations.Operation`, in each service's\n",
        "`api.py`) and served from that declaration on HTTP and on NATS request-reply, where the request\n",
        'is the input as JSON and the reply `{"ok": true, "result": <output>}` or\n',
        '`{"ok": false, "status", "detail", "errors": [{"field", "message"}]}`. Over HTTP the path\n',
        "parameters are fields of the input; the other fields are the JSON body (the query for GET and\n",
        "DELETE). Refusals are `Problem` bodies with the same status on both doors. The permission is what\n",
        "a caller needs; both doors check it in one place (`mailwarden_runtime.operations.authorize`).\n",
    ]
    by_permission: dict[str, list[str]] = {}
    for service, operations in services:
        if not operations:
            continue
        parts.append(f"\n## {service}\n\n")
        rows = []
        for op in operations:
            by_permission.setdefault(op.permission, []).append(f"{service} `{op.name}`")
            rows.append(
                [
                    f"`{op.name}`",
                    _http(op),
                    f"`{op.subject(service)}`",
                    f"`{op.input.__name__}`",
                    f"`{op.output.__name__}`" + (" (HTTP: its `items`)" if op.http_items else ""),
                    _statuses(op),
                    f"`{op.permission}`",
                ]
            )
        parts.append(
            table(["Operation", "HTTP", "NATS subject", "Input", "Output", "Statuses", "Permission"], rows)
        )
    parts.append("\n## By permission\n\n")
    rows = [[f"`{p}`", ", ".join(ops)] for p, ops in sorted(by_permission.items())]
    parts.append(table(["Permission", "Operations"], rows))
    return "".join(parts)
