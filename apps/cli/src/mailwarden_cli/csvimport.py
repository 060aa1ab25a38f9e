"""Mailboxes from a CSV file: every valid row created, every bad row named with its field and reason.

mailbox-svc's batch create is all-or-nothing and names bad items as ``mailboxes.<index>.<field>``;
the import sends the batch, sets aside the rows the service names and sends the rest again. An error
that names no row (an id taken, a duplicate in the file) makes it create the remaining rows one by
one, so each refusal still lands on its row. Validation stays in the service: nothing is copied here.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from typing import Any

from mailwarden_cli.client import Bus, RpcError

SERVICE = "mailbox-svc"
CHUNK = 500  # the batch operation takes at most 1000 mailboxes
COLUMNS = (
    "mailbox_id",
    "email",
    "owner_kind",
    "owner_id",
    "owner_name",
    "owner_email",
    "profile_id",
    "username",
    "password",
    "outgoing_username",
    "outgoing_password",
    "incoming_delivery",
    "outgoing_delivery",
    "act_delivery",
    "process_email_received_after",
)
# request field -> the CSV column the user wrote it in
_COLUMN_OF = {
    "owner.kind": "owner_kind",
    "owner.id": "owner_id",
    "owner.name": "owner_name",
    "owner.email": "owner_email",
    "credentials.username": "username",
    "credentials.password": "password",
    "outgoing_credentials.username": "outgoing_username",
    "outgoing_credentials.password": "outgoing_password",
}
_ITEM = re.compile(r"^mailboxes\.(\d+)(?:\.(.+))?$")
REFUSED = (400, 404, 409, 422)


class CsvProblem(ValueError):
    """The file itself cannot be read as mailbox rows (a usage error, not a row error)."""


@dataclass(frozen=True)
class Row:
    line: int
    body: dict[str, Any]


@dataclass(frozen=True)
class RowError:
    line: int
    field: str
    message: str


@dataclass
class ImportReport:
    created: list[tuple[int, str]] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)


def _column(name: str) -> str:
    if name in _COLUMN_OF:
        return _COLUMN_OF[name]
    return "owner_id" if name == "owner" or name.startswith("owner.") else name


def row_body(values: dict[str, str]) -> dict[str, Any]:
    """One CSV row as a create request; blank cells are left out."""
    v = {k: (val or "").strip() or None for k, val in values.items()}
    body: dict[str, Any] = {
        k: v.get(k)
        for k in (
            "mailbox_id",
            "email",
            "profile_id",
            "incoming_delivery",
            "outgoing_delivery",
            "act_delivery",
            "process_email_received_after",
        )
    }
    if v.get("owner_id") or v.get("owner_kind") or v.get("owner_name"):
        body["owner"] = {
            "kind": v.get("owner_kind") or "user",
            "id": v.get("owner_id"),
            "name": v.get("owner_name") or v.get("owner_id"),
            "email": v.get("owner_email"),
        }
    if v.get("username") or v.get("password"):
        body["credentials"] = {"username": v.get("username"), "password": v.get("password")}
    if v.get("outgoing_username") or v.get("outgoing_password"):
        body["outgoing_credentials"] = {
            "username": v.get("outgoing_username"),
            "password": v.get("outgoing_password"),
        }
    pruned: dict[str, Any] = _drop_none(body)
    return pruned


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(x) for k, x in value.items() if x is not None}
    return value


def parse(text: str) -> tuple[list[Row], list[RowError]]:
    """Rows to send and rows refused before sending (a wrong number of cells)."""
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in reader.fieldnames or []]
    if not header:
        raise CsvProblem("the file is empty: the first line must name the columns")
    unknown = [h for h in header if h not in COLUMNS]
    if unknown:
        raise CsvProblem(f"unknown column(s) {', '.join(unknown)}; known: {', '.join(COLUMNS)}")
    if "email" not in header:
        raise CsvProblem("the column email is required")
    reader.fieldnames = header
    rows: list[Row] = []
    errors: list[RowError] = []
    for values in reader:
        line = reader.line_num
        if None in values:
            errors.append(RowError(line, "row", f"more cells than the {len(header)} columns"))
            continue
        if any(val is None for val in values.values()):
            errors.append(RowError(line, "row", f"fewer cells than the {len(header)} columns"))
            continue
        rows.append(Row(line, row_body(values)))
    return rows, errors


async def create_rows(bus: Bus, rows: list[Row]) -> ImportReport:
    report = ImportReport()
    for start in range(0, len(rows), CHUNK):
        await _create_chunk(bus, rows[start : start + CHUNK], report)
    return report


async def _create_chunk(bus: Bus, rows: list[Row], report: ImportReport) -> None:
    remaining = list(rows)
    while remaining:
        try:
            result = await bus.call(SERVICE, "create_many", {"mailboxes": [r.body for r in remaining]})
        except RpcError as exc:
            if exc.status not in REFUSED:
                raise
            bad = _by_item(exc)
            if not bad:
                await _one_by_one(bus, remaining, report)
                return
            for index, problems in sorted(bad.items()):
                if index < len(remaining):
                    report.errors.extend(RowError(remaining[index].line, f, m) for f, m in problems)
            remaining = [r for i, r in enumerate(remaining) if i not in bad]
            continue
        report.created.extend(zip((r.line for r in remaining), result.get("done") or [], strict=False))
        return


def _by_item(exc: RpcError) -> dict[int, list[tuple[str, str]]]:
    bad: dict[int, list[tuple[str, str]]] = {}
    for problem in exc.errors:
        match = _ITEM.match(problem.field)
        if match:
            name = _column(match.group(2) or "row")
            bad.setdefault(int(match.group(1)), []).append((name, problem.message))
    return bad


async def _one_by_one(bus: Bus, rows: list[Row], report: ImportReport) -> None:
    for row in rows:
        try:
            view = await bus.call(SERVICE, "create", row.body)
        except RpcError as exc:
            if exc.status not in REFUSED:
                raise
            if exc.errors:
                report.errors.extend(RowError(row.line, _column(e.field), e.message) for e in exc.errors)
            else:
                report.errors.append(RowError(row.line, "row", exc.detail))
            continue
        report.created.append((row.line, view["mailbox_id"]))
