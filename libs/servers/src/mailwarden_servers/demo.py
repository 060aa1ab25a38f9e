"""`make demo`: the whole system plus a local mail server, demo data, and a first test within a minute.

Starts what `make up` starts (devstack.py), plus Dovecot (IMAPS, POP3S) and an SMTP submission
server that delivers into Dovecot, both with certificates of a demo CA and the demo users. The
tester trusts that CA (``MW_TESTER_CA_FILE``) and may reach exactly the demo servers' address
(``MW_TESTER_ALLOW_NETWORKS=127.0.0.1/32``); the organisation allows exactly their ports. Then it
creates two profiles (IMAP, POP3), three mailboxes (IMAP that works, POP3 that works, a wrong
password), approves and tests them, waits for the success and the error alert, and prints the quick
tour (the README's, which ``tests/demo`` runs against this very stack).

Every start is fresh: the demo's folder (``.demo``) is emptied first. Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailwarden_servers.certs import TestCertificates
from mailwarden_servers.devstack import (
    ADMIN_TOKEN_FILE,
    Stack,
    admin_token,
    print_stack,
    run_in_foreground,
    start_stack,
)
from mailwarden_servers.dovecot import DovecotServer
from mailwarden_servers.ports import LOCALHOST, ServerStartError, port_or_free
from mailwarden_servers.process import ManagedProcess
from mailwarden_servers.smtp import SmtpProcess

DOMAIN = "demo.test"
USERS = {  # Dovecot and SMTP logins; dave's mailbox is given a wrong password on purpose
    "alice": "alice-demo-pw",
    "bob": "bob-demo-pw",
    "carol": "carol-demo-pw",
    "dave": "dave-demo-pw",
}
OWNER = "demo"
PROFILE_OWNER = "demo-admin"
# Preferred ports, so the URLs and the allow-list stay the same between runs (another if taken).
IMAP_PORTS = (10143, 10993)
POP3_PORTS = (10110, 10995)
SMTP_PORTS = (10587, 10465)
ALERT_WAIT_S = 90.0

TOUR = """\
mailwarden mailbox list                          # the demo's mailboxes: statuses, enabled or not
mailwarden alerts list --recipient user:demo     # their owner's wall: a success alert and an error alert
mailwarden mailbox show demo-wrong-password      # the failed test: every step, the error, what to do
mailwarden mailbox update demo-wrong-password --username dave --password 'dave-demo-pw'
PROFILE=$(mailwarden profile list --name-contains "Demo IMAP" -q)
mailwarden mailbox add --id carol --email carol@demo.test --owner-id carol --owner-email carol@demo.test \\
  --profile "$PROFILE" --username carol --password 'carol-demo-pw'
mailwarden mailbox approve carol
mailwarden mailbox test carol --wait             # progress bar, then a summary by error code; exit 1 on failure
mailwarden mailbox show carol                    # the last test trace: every step, its duration, facts
mailwarden job start "$PROFILE" --watch          # Test & Enable every mailbox of the profile: all succeed now
mailwarden alerts list --recipient user:demo     # the error alert is resolved
"""


@dataclass(frozen=True)
class MailServers:
    """The demo's Dovecot and SMTP server, and the CA that signed their certificates."""

    certs: TestCertificates
    dovecot: DovecotServer
    smtp: SmtpProcess

    @property
    def ports(self) -> list[int]:
        """Exactly the ports the demo profiles use: the organisation allows these and no others."""
        return [self.dovecot.imaps_port, self.dovecot.pop3s_port, self.smtp.port_starttls]


def mail_servers(data: Path) -> MailServers:
    """The demo CA and the (not yet started) Dovecot and SMTP server it signed for."""
    certs = TestCertificates.create(data / "ca")
    dovecot = DovecotServer(data / "dovecot", certs, USERS)
    dovecot.imap_port, dovecot.imaps_port = (port_or_free(p) for p in IMAP_PORTS)
    dovecot.pop3_port, dovecot.pop3s_port = (port_or_free(p) for p in POP3_PORTS)
    print(f"starting Dovecot (IMAPS {dovecot.imaps_port}, POP3S {dovecot.pop3s_port}) ...", flush=True)
    smtp = SmtpProcess(data / "smtp", certs, USERS, deliver_to_dovecot=dovecot.config_path)
    smtp.port_starttls, smtp.port_tls = (port_or_free(p) for p in SMTP_PORTS)
    print(f"starting SMTP (STARTTLS {smtp.port_starttls}, delivers into Dovecot) ...", flush=True)
    return MailServers(certs, dovecot, smtp)


def tester_env(mail: MailServers) -> dict[str, str]:
    """The tester (and the sender) trust the demo CA and may reach the demo servers' address,
    nothing else private."""
    return {
        "MW_TESTER_CA_FILE": str(mail.certs.ca),
        "MW_TESTER_ALLOW_NETWORKS": f"{LOCALHOST}/32",
        "MW_SENDER_CA_FILE": str(mail.certs.ca),
        "MW_SENDER_ALLOW_NETWORKS": f"{LOCALHOST}/32",
    }


# ---- the demo data, through the services' HTTP APIs ------------------------------------------


TOKEN: dict[str, str] = {}  # the administrator token make demo made, for its own calls


def call(method: str, url: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN.get('token', '')}"}
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            text = resp.read()
    except urllib.error.HTTPError as exc:
        raise ServerStartError(f"{method} {url} answered {exc.code}: {exc.read().decode()}") from None
    return json.loads(text) if text else None


def _owner(oid: str) -> dict[str, str]:
    return {"kind": "user", "id": oid, "name": oid, "email": f"{oid}@{DOMAIN}"}


def _profile(name: str, protocol: str, port: int, smtp_port: int) -> dict[str, Any]:
    return {
        "name": name,
        "owner": _owner(PROFILE_OWNER),
        "incoming_protocol": protocol,
        "incoming": {"host": LOCALHOST, "port": port, "tls": "implicit"},
        "use_same_settings_for_outgoing": False,
        "outgoing": {"host": LOCALHOST, "port": smtp_port, "tls": "starttls"},
    }


def _mailbox(mailbox_id: str, user: str, password: str, profile_id: str) -> dict[str, Any]:
    return {
        "mailbox_id": mailbox_id,
        "email": f"{user}@{DOMAIN}",
        "owner": _owner(OWNER),
        "profile_id": profile_id,
        "credentials": {"username": user, "password": password},
    }


SETTINGS_FIELDS = (
    "default_profile_id", "incoming_delivery", "outgoing_delivery", "act_delivery", "approved_users_only",
    "approved_queues_only", "alert_levels", "notify_mailbox_owner", "port_preset", "allowed_ports",
)  # fmt: skip


def seed(stack: Stack, mail: MailServers) -> list[str]:
    """Org settings, the two demo profiles and three mailboxes, approved and under test."""
    profiles, mailboxes = stack.url("profile-svc"), stack.url("mailbox-svc")
    current = call("GET", f"{profiles}/settings")
    settings = {k: v for k, v in current.items() if k in SETTINGS_FIELDS}
    settings.update(port_preset="custom", allowed_ports=mail.ports)
    call("PUT", f"{profiles}/settings", settings)
    smtp_port = mail.smtp.port_starttls
    imap = call(
        "POST", f"{profiles}/profiles", _profile("Demo IMAP", "imap", mail.dovecot.imaps_port, smtp_port)
    )
    pop3 = call(
        "POST", f"{profiles}/profiles", _profile("Demo POP3", "pop3", mail.dovecot.pop3s_port, smtp_port)
    )
    boxes = [
        _mailbox("demo-imap", "alice", USERS["alice"], imap["profile_id"]),
        _mailbox("demo-pop3", "bob", USERS["bob"], pop3["profile_id"]),
        _mailbox("demo-wrong-password", "dave", "not-daves-password", imap["profile_id"]),
    ]
    for box in boxes:
        call("POST", f"{mailboxes}/mailboxes", box)
    ids = [b["mailbox_id"] for b in boxes]
    call("POST", f"{mailboxes}/mailboxes/approve", {"mailbox_ids": ids})
    call("POST", f"{mailboxes}/mailboxes/test", {"mailbox_ids": ids})
    return ids


def wait_for_alerts(stack: Stack, t0: float) -> dict[str, float]:
    """Seconds from the start to the first success (information) and error alert on the owner's wall."""
    url = f"{stack.url('alert-svc')}/alerts?recipient_kind=user&recipient_id={OWNER}"
    seen: dict[str, float] = {}
    deadline = time.monotonic() + ALERT_WAIT_S
    while time.monotonic() < deadline and len(seen) < 2:
        for alert in call("GET", url)["items"]:
            level = "success" if alert["level"] == "information" else alert["level"]
            if level in ("success", "error"):
                seen.setdefault(level, time.monotonic() - t0)
        time.sleep(0.25)
    return seen


def print_tour(stack: Stack) -> None:
    print("Quick tour (paste into a shell; `. .venv/bin/activate` puts `mailwarden` on your PATH):\n")
    if stack.nats_url != "nats://127.0.0.1:4222":
        print(f"export MW_NATS_URL={stack.nats_url}")
    print(TOUR)


def main(argv: list[str] | None = None) -> int:
    t0 = time.monotonic()
    parser = argparse.ArgumentParser(prog="mailwarden-demo", description=__doc__)
    parser.add_argument("--data-dir", default=".demo", help="emptied at every start")
    parser.add_argument("--once", action="store_true", help="start, seed, wait for the alerts, then stop")
    args = parser.parse_args(argv)
    data = Path(args.data_dir).resolve()
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    data.chmod(0o755)  # Dovecot's unprivileged processes traverse it

    def start(started: list[ManagedProcess]) -> int | None:
        mail = mail_servers(data)
        stack = start_stack(data, started, tester_env(mail), alongside=(mail.dovecot, mail.smtp))
        print_stack(stack)
        admin_token(stack.nats_url, data / ADMIN_TOKEN_FILE)
        TOKEN["token"] = json.loads((data / ADMIN_TOKEN_FILE).read_text())["token"]
        ids = seed(stack, mail)
        print(f"demo data: profiles Demo IMAP and Demo POP3, mailboxes {', '.join(ids)} (tests running) ...")
        seen = wait_for_alerts(stack, t0)
        for level in ("success", "error"):
            when = f"after {seen[level]:.1f} s" if level in seen else f"not within {ALERT_WAIT_S:.0f} s"
            print(f"  first {level} alert on user:{OWNER}'s wall {when}", flush=True)
        (data / "timings.json").write_text(json.dumps(seen))
        print()
        print_tour(stack)
        print("demo ready", flush=True)
        if args.once:
            return 0 if len(seen) == 2 else 1
        return None

    return run_in_foreground(start)


if __name__ == "__main__":
    sys.exit(main())
