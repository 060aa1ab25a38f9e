"""Option types several commands share, and small helpers to build request bodies from them."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from contracts.models import OwnerKind

JsonOut = Annotated[bool, typer.Option("--json", help="Print the result as JSON (for scripts).")]


class SmtpModeChoice(StrEnum):
    """The outgoing test's modes (contracts.events.SmtpMode)."""

    DRY_RUN = "dry_run"
    SEND = "send"


SMTP_MODES = "dry_run: the envelope only; send: a message to the mailbox itself, found and deleted over IMAP."
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print only the new id.")]
OwnerKindOpt = Annotated[OwnerKind | None, typer.Option("--owner-kind", help="user or queue.")]
OwnerIdOpt = Annotated[str | None, typer.Option("--owner-id", help="Owner id (alerts go to this owner).")]
OwnerNameOpt = Annotated[
    str | None, typer.Option("--owner-name", help="Owner display name (default: the id).")
]
OwnerEmailOpt = Annotated[str | None, typer.Option("--owner-email", help="Owner notification address.")]
FromJson = Annotated[
    Path | None,
    typer.Option(
        "--from-json",
        help="A JSON object with more fields of the request ('-' reads stdin); options win over it.",
        dir_okay=False,
        allow_dash=True,
    ),
]


def prune(value: Any) -> Any:
    """Drop ``None`` values and the objects left empty, so only what the user gave is sent."""
    if isinstance(value, dict):
        out = {k: prune(v) for k, v in value.items() if v is not None}
        return {k: v for k, v in out.items() if v != {}}
    return value


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``, nested objects merged key by key."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def read_json(path: Path | None) -> dict[str, Any]:
    """The ``--from-json`` object, or {}; a file that is not a JSON object is a usage error."""
    if path is None:
        return {}
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
        data = json.loads(text)
    except OSError as exc:
        raise typer.BadParameter(f"cannot read JSON: {exc}", param_hint="--from-json") from None
    except json.JSONDecodeError as exc:
        where = f"malformed JSON at line {exc.lineno} column {exc.colno}"
        raise typer.BadParameter(where, param_hint="--from-json") from None
    if not isinstance(data, dict):
        raise typer.BadParameter("must hold a JSON object", param_hint="--from-json")
    return data


def owner(
    kind: OwnerKind | None, oid: str | None, name: str | None, email: str | None
) -> dict[str, Any] | None:
    """The owner object when an owner id was given (kind defaults to user, name to the id)."""
    if oid is None:
        if kind or name or email:
            raise typer.BadParameter("give --owner-id with the other owner options", param_hint="--owner-id")
        return None
    result: dict[str, Any] = prune(
        {"kind": (kind or OwnerKind.USER).value, "id": oid, "name": name or oid, "email": email}
    )
    return result


def csv_list(text: str | None) -> list[str] | None:
    """``a,b,c`` → ["a", "b", "c"]; None stays None."""
    if text is None:
        return None
    return [p.strip() for p in text.split(",") if p.strip()]
