"""How results look in a terminal: tables, detail views and test traces (JSON output lives elsewhere)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from contracts.errors import CATALOG, ErrorCode

STATUS_STYLE = {"success": "green", "failure": "red", "not_run": "dim", "not_applicable": "dim"}
LEVEL_STYLE = {"error": "red", "warning": "yellow", "information": "cyan"}


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(_cell(v) for v in value) or "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_cell(v)}" for k, v in value.items()) or "-"
    return str(value)


def status(value: str | None) -> Text:
    return Text(value or "-", style=STATUS_STYLE.get(value or "", ""))


def remediation(code: str) -> str:
    """What to do about an error code, from the shared catalog ('' for codes it does not know)."""
    try:
        return CATALOG[ErrorCode(code)].remediation
    except (ValueError, KeyError):
        return ""


def details(title: str, rows: Iterable[tuple[str, Any]]) -> Table:
    """Two columns, field and value: one object at a glance."""
    table = Table(title=title, show_header=False, box=None, title_justify="left", title_style="bold")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for name, value in rows:
        table.add_row(name, value if isinstance(value, Text) else _cell(value))
    return table


def owner(o: Mapping[str, Any] | None) -> str:
    if not o:
        return "-"
    return f"{o.get('kind')}:{o.get('id')}"


def endpoint(e: Mapping[str, Any] | None) -> str:
    if not e:
        return "-"
    return f"{e.get('host')}:{e.get('port')} ({e.get('tls')})"


def profiles_table(items: list[dict[str, Any]]) -> Table:
    table = Table(title=f"{len(items)} profile(s)", title_justify="left")
    for col in ("id", "name", "protocol", "incoming", "outgoing", "owner", "default"):
        table.add_column(col, overflow="fold")
    for p in items:
        table.add_row(
            p["profile_id"],
            p["name"],
            p["incoming_protocol"],
            endpoint(p.get("incoming")),
            endpoint(p.get("outgoing")),
            owner(p.get("owner")),
            _cell(p.get("is_default")),
        )
    return table


def profile_view(p: dict[str, Any]) -> Table:
    adv = p.get("advanced") or {}
    return details(
        f"profile {p['profile_id']}",
        [
            ("name", p.get("name")),
            ("description", p.get("description") or None),
            ("owner", owner(p.get("owner"))),
            ("protocol", p.get("incoming_protocol")),
            ("incoming", endpoint(p.get("incoming"))),
            ("outgoing", endpoint(p.get("outgoing"))),
            ("credential source", p.get("credential_source")),
            ("has credentials", p.get("has_credentials")),
            ("default", p.get("is_default")),
            ("verify TLS", adv.get("verify_tls")),
            ("plaintext auth", adv.get("allow_plaintext_auth")),
            ("connect timeout (s)", adv.get("connect_timeout_s")),
            ("max connections", adv.get("max_concurrent_connections")),
            ("version", p.get("version")),
            ("updated", p.get("updated_at")),
        ],
    )


def settings_view(s: dict[str, Any]) -> Table:
    return details("organisation email settings", sorted(s.items()))


def mailboxes_table(items: list[dict[str, Any]], next_after: str | None = None) -> Table:
    caption = f"more: --after {next_after}" if next_after else None
    table = Table(title=f"{len(items)} mailbox(es)", title_justify="left", caption=caption)
    for col in (
        "id",
        "email",
        "owner",
        "profile",
        "approval",
        "incoming",
        "outgoing",
        "enabled",
        "last error",
    ):
        table.add_column(col, overflow="fold")
    for m in items:
        enabled = (
            f"{'in' if m.get('enabled_incoming') else '-'}/{'out' if m.get('enabled_outgoing') else '-'}"
        )
        err = m.get("last_error") or {}
        table.add_row(
            m["mailbox_id"],
            m["email"],
            owner(m.get("owner")),
            m.get("profile_id") or "-",
            m.get("approval", "-"),
            status(m.get("incoming_status")),
            status(m.get("outgoing_status")),
            enabled,
            err.get("code") or "-",
        )
    return table


def mailbox_view(m: dict[str, Any]) -> Table:
    creds = m.get("credentials") or {}
    err = m.get("last_error") or {}
    return details(
        f"mailbox {m['mailbox_id']}",
        [
            ("email", m.get("email")),
            ("owner", owner(m.get("owner"))),
            ("profile", m.get("profile_id")),
            ("approval", m.get("approval")),
            ("active", m.get("active")),
            (
                "login",
                f"{creds.get('username') or '-'} (password {'set' if creds.get('has_password') else 'not set'})",
            ),
            ("incoming", status(m.get("incoming_status"))),
            ("outgoing", status(m.get("outgoing_status"))),
            ("enabled in/out", f"{_cell(m.get('enabled_incoming'))}/{_cell(m.get('enabled_outgoing'))}"),
            ("test scheduled", m.get("test_scheduled")),
            ("next test", m.get("postponed_until")),  # a retry's time (after a breaker pause: its end)
            ("retries", m.get("retry_count")),
            ("last test", m.get("last_test_completed_at")),
            ("last error", f"{err['code']}: {err.get('message', '')}" if err else None),
            ("disabled reason", m.get("disabled_reason")),
            ("warnings", [w.get("code") for w in m.get("warnings") or []]),
        ],
    )


def _facts(facts: Mapping[str, Any] | None) -> str:
    return "; ".join(f"{k}={_cell(v)}" for k, v in (facts or {}).items())


def direction_trace(d: dict[str, Any]) -> RenderableType:
    """One direction of a test run: each step with its duration and facts, then the error and its fix."""
    title = (
        f"{d.get('direction')} ({d.get('protocol')}): {d.get('status')} in {d.get('duration_ms', 0):.0f} ms"
    )
    table = Table(title=title, title_justify="left", title_style=STATUS_STYLE.get(d.get("status", ""), ""))
    table.add_column("step")
    table.add_column("ok")
    table.add_column("ms", justify="right")
    table.add_column("facts", overflow="fold")
    table.add_column("error", overflow="fold")
    for s in d.get("steps") or []:
        table.add_row(
            s.get("name", "?"),
            Text("ok", style="green") if s.get("ok") else Text("FAIL", style="red"),
            f"{float(s.get('duration_ms') or 0):.1f}",
            _facts(s.get("facts")),
            " ".join(x for x in (s.get("error_code"), s.get("detail")) if x) or "",
        )
    parts: list[RenderableType] = [table]
    error = d.get("error")
    if error:
        parts.append(Text(f"error {error.get('code')}: {error.get('message', '')}", style="red"))
        fix = remediation(str(error.get("code")))
        if fix:
            parts.append(Text(f"remediation: {fix}"))
    for w in d.get("warnings") or []:
        parts.append(Text(f"warning {w.get('code')}: {w.get('message', '')}", style="yellow"))
    return Group(*parts)


def test_trace(run: dict[str, Any]) -> RenderableType:
    """The last test run of a mailbox, as the history operation returns it."""
    head = Text(
        f"last test {run.get('test_id')} (attempt {run.get('attempt')}): {run.get('outcome')} "
        f"at {run.get('received_at')}",
        style="bold",
    )
    result = run.get("result") or {}
    parts: list[RenderableType] = [head]
    for key in ("incoming", "outgoing"):
        if isinstance(result.get(key), dict):
            parts.append(direction_trace(result[key]))
    return Group(*parts)


def bulk_result(action: str, result: dict[str, Any]) -> Table:
    """What a bulk operation did, and what it refused and why."""
    done = result.get("done") or []
    refused = result.get("refused") or []
    table = Table(title=f"{action}: {len(done)} done, {len(refused)} refused", title_justify="left")
    table.add_column("mailbox")
    table.add_column("result")
    table.add_column("why", overflow="fold")
    for mid in done:
        test_id = (result.get("test_ids") or {}).get(mid)
        table.add_row(mid, Text("done", style="green"), f"test {test_id}" if test_id else "")
    for r in refused:
        table.add_row(
            r.get("mailbox_id", "?"), Text(f"refused {r.get('code')}", style="red"), r.get("message", "")
        )
    return table


def code_summary(counts: Mapping[str, int], title: str = "results by error code") -> Table:
    """How many mailboxes ended with each code, and what to do about each."""
    table = Table(title=title, title_justify="left")
    table.add_column("code")
    table.add_column("mailboxes", justify="right")
    table.add_column("remediation", overflow="fold")
    for code, n in sorted(counts.items(), key=lambda kv: (kv[0] != "success", -kv[1], kv[0])):
        style = "green" if code == "success" else "red"
        table.add_row(Text(code, style=style), str(n), remediation(code))
    return table


def job_view(j: dict[str, Any]) -> Table:
    return details(
        f"job {j['job_id']}",
        [
            ("profile", j.get("profile_id")),
            ("state", j.get("state")),
            ("total", j.get("total")),
            ("requested", j.get("requested")),
            ("done", j.get("done")),
            ("succeeded", j.get("succeeded")),
            ("failed", _counts(j.get("failed"))),
            ("refused", _counts(j.get("refused"))),
            ("created", j.get("created_at")),
            ("finished", j.get("finished_at")),
        ],
    )


def _counts(c: Mapping[str, int] | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in (c or {}).items()) or "-"


def alert_change(a: Mapping[str, Any]) -> tuple[str, str]:
    """What last happened to an alert and when: raised, updated (seen again) or resolved."""
    if a.get("state") == "resolved":
        return "resolved", str(a.get("resolved_at") or a.get("last_seen") or "")
    if int(a.get("count") or 1) > 1:
        return "updated", str(a.get("last_seen") or "")
    return "raised", str(a.get("first_seen") or a.get("last_seen") or "")


def alerts_table(items: list[dict[str, Any]], next_cursor: str | None = None) -> Table:
    caption = f"more: --cursor {next_cursor}" if next_cursor else None
    table = Table(title=f"{len(items)} alert(s)", title_justify="left", caption=caption)
    for col in (
        "id",
        "level",
        "recipient",
        "code",
        "title",
        "mailbox",
        "state",
        "changed",
        "count",
        "read",
    ):
        table.add_column(col, overflow="fold")
    for a in items:
        change, when = alert_change(a)
        table.add_row(
            a["id"],
            Text(a.get("level", ""), style=LEVEL_STYLE.get(a.get("level", ""), "")),
            owner(a.get("recipient")),
            a.get("code", ""),
            a.get("title", ""),
            a.get("mailbox_id") or "-",
            change,
            when,
            str(a.get("count", "")),
            _cell(a.get("read")),
        )
    return table


def alert_line(a: Mapping[str, Any]) -> Text:
    """One live alert (an AlertRaised event) on one line, then its remediation."""
    level = str(a.get("level", ""))
    change, when = alert_change(a)
    text = Text()
    text.append(f"[{level}] ", style=LEVEL_STYLE.get(level, ""))
    text.append(f"{change} ", style="bold" if change == "resolved" else "")
    text.append(f"{when} {owner(a.get('recipient'))} {a.get('code', '')}: ")
    text.append(str(a.get("title", "")), style="bold")
    if a.get("message"):
        text.append(f" - {a['message']}")
    if a.get("remediation"):
        text.append(f"\n    remediation: {a['remediation']}")
    return text
