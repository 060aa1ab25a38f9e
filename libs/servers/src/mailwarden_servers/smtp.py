"""SMTP submission servers (aiosmtpd) that record what they receive.

`SmtpServer` runs in-process (one thread per port) so tests can inspect `messages`;
`SmtpProcess` runs the same thing as its own process (`python -m mailwarden_servers.smtp`)
for benchmarks, where the GIL of the test driver must not be shared.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session, TLSSetupException

from mailwarden_servers.certs import CertPair, TestCertificates
from mailwarden_servers.dovecot import doveadm_save
from mailwarden_servers.ports import LOCALHOST, ServerStartError, free_port, wait_port
from mailwarden_servers.process import ManagedProcess
from mailwarden_servers.running import Running

__all__ = ["ReceivedMessage", "SmtpProcess", "SmtpServer"]

_aiosmtpd_log = logging.getLogger("mail.log")
READY_LINE = "smtp ready:"


class ReceivedMessage(NamedTuple):
    """One accepted message; `auth_login` is the AUTH user or None."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    auth_login: str | None


class _QuietLoginData(logging.Filter):
    """Drops aiosmtpd's per-AUTH "login_data is deprecated" line (its own code triggers it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Session.login_data is deprecated")


_quiet_filter = _QuietLoginData()
_filter_users = 0
_filter_lock = threading.Lock()


def _quiet_aiosmtpd(enable: bool) -> None:
    """Install the filter while at least one server runs; remove it afterwards."""
    global _filter_users
    with _filter_lock:
        _filter_users += 1 if enable else -1
        if _filter_users > 0:
            _aiosmtpd_log.addFilter(_quiet_filter)
        else:
            _filter_users = 0
            _aiosmtpd_log.removeFilter(_quiet_filter)


class _Handler:
    """aiosmtpd hooks: refuse configured recipients, record messages, swallow TLS aborts."""

    def __init__(self, owner: SmtpServer) -> None:
        self.owner = owner

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if self.owner.pipelining:  # aiosmtpd reads pipelined commands in order; it just does not say so
            responses.insert(len(responses) - 1, "250-PIPELINING")
        return responses

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        gate = self.owner.rcpt_gate
        if gate is not None:  # the reply waits (a client may die meanwhile, before DATA)
            await asyncio.to_thread(gate.wait, 60.0)
        refusal = self.owner.refused_rcpts.get(address.lower())
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        auth = session.auth_data
        login = auth.login.decode() if isinstance(auth, LoginPassword) else None
        content = envelope.original_content or b""
        refusal = self.owner._next_data_reply()
        if refusal is not None:
            return refusal
        self.owner._record(ReceivedMessage(str(envelope.mail_from), list(envelope.rcpt_tos), content, login))
        gate = self.owner.data_gate
        if gate is not None:  # the message is in; the reply waits (a client may die meanwhile)
            await asyncio.to_thread(gate.wait, 60.0)
        return "250 2.0.0 Message accepted"

    async def handle_exception(self, error: Exception) -> str:
        # A client that aborts the TLS handshake (e.g. rejects our test cert) is expected in
        # tester tests; aiosmtpd would log a full traceback for it.
        if not isinstance(error, TLSSetupException):
            _aiosmtpd_log.exception("SMTP session exception")
        return f"500 Error: ({type(error).__name__}) {error}"


class _CountingSMTP(SMTP):
    """aiosmtpd's SMTP plus a session counter and AUTH over implicit TLS without warnings."""

    def __init__(self, handler: _Handler, *, implicit_tls: bool = False, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._owner = handler.owner
        if implicit_tls:
            # aiosmtpd counts only STARTTLS as TLS and would never offer AUTH on an
            # implicit-TLS port. Passing auth_require_tls=False instead emits a UserWarning and
            # a log line per connection; the transport is TLS here, so relax the check directly.
            self._auth_require_tls = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.transport is None:  # a second call happens after STARTTLS: same session
            self._owner._count("sessions")
            self._opened_at = time.monotonic()
            self._owner._opened(+1)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if not getattr(self, "_counted_lost", False):
            self._counted_lost = True
            self._owner._opened(-1, (self._opened_at, time.monotonic()))
        super().connection_lost(error)


class _Controller(Controller):
    """Controller building our SMTP subclass."""

    def __init__(self, handler: _Handler, *, implicit_tls: bool, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._implicit_tls = implicit_tls

    def factory(self) -> SMTP:
        return _CountingSMTP(self.handler, implicit_tls=self._implicit_tls, **self.SMTP_kwargs)


class SmtpServer(Running):
    """In-process SMTP test server with AUTH (LOGIN/PLAIN) against `users`.

    Ports: `port_starttls` (STARTTLS, AUTH only after TLS, like 587), `port_tls` (implicit
    TLS, like 465) and, with `plain=True`, `port_plain` (no TLS; AUTH offered, not required).
    Counters: `sessions`, `auth_attempts`, `auth_failures`; `open_now` and `peak_open` (the most
    sessions open at once since the last `clear()`) and `spans` ((opened, closed) monotonic times
    of the sessions closed since then; :meth:`overlap` measures them).
    """

    def __init__(
        self,
        certs: TestCertificates,
        users: dict[str, str],
        cert: CertPair | None = None,
        *,
        plain: bool = False,
        keep_messages: bool = True,
        hostname: str = "mail.test",
        port_starttls: int | None = None,
        port_tls: int | None = None,
        port_plain: int | None = None,
        deliver: Callable[[str, bytes], None] | None = None,
        data_size_limit: int = 33_554_432,
        smtputf8: bool = False,
        pipelining: bool = False,
    ) -> None:
        """``deliver(recipient, message)``, when given, hands every accepted message on (e.g. into
        Dovecot), so a message sent to a mailbox can be found there, as the tester's send mode does."""
        self.host = LOCALHOST
        self.deliver = deliver
        self.pipelining = pipelining
        self.data_size_limit = data_size_limit
        self.smtputf8 = smtputf8
        self.data_replies: list[str] = []
        self.data_gate: threading.Event | None = None
        self.rcpt_gate: threading.Event | None = None
        self.certs = certs
        self.cert = cert or certs.server
        self.users = dict(users)
        self.hostname = hostname
        self.keep_messages = keep_messages
        self.port_starttls = port_starttls or free_port()
        self.port_tls = port_tls or free_port()
        self.port_plain = (port_plain or free_port()) if plain else None
        self.messages: list[ReceivedMessage] = []
        self.refused_rcpts: dict[str, str] = {}
        self.sessions = 0
        self.open_now = 0
        self.peak_open = 0
        self.spans: list[tuple[float, float]] = []
        self.auth_attempts = 0
        self.auth_failures = 0
        self.message_count = 0
        self._lock = threading.Lock()
        self._controllers: list[Controller] = []

    # --- configuration ---------------------------------------------------------------------
    def set_password(self, user: str, password: str) -> None:
        """Add a user or change a password; applies to the next AUTH."""
        self.users[user] = password

    def refuse_rcpt(self, address: str, reply: str | None = None) -> None:
        """Answer RCPT TO:<address> with 550 (or `reply`)."""
        self.refused_rcpts[address.lower()] = reply or f"550 5.1.1 <{address}>: Recipient rejected"

    def fail_next_data(self, *replies: str) -> None:
        """Answer the next messages' end of DATA with ``replies`` (one each, e.g. ``451 4.3.0 busy``)
        instead of accepting them."""
        with self._lock:
            self.data_replies.extend(replies)

    def hold_data(self) -> threading.Event:
        """From now on, record each message, then wait for the returned event before answering."""
        self.data_gate = threading.Event()
        return self.data_gate

    def hold_rcpt(self) -> threading.Event:
        """From now on, answer RCPT TO only once the returned event is set."""
        self.rcpt_gate = threading.Event()
        return self.rcpt_gate

    def clear(self) -> None:
        """Forget messages, counters and refusals between tests."""
        with self._lock:
            self.messages.clear()
            self.refused_rcpts.clear()
            self.data_replies.clear()
            for gate in (self.data_gate, self.rcpt_gate):
                if gate is not None:
                    gate.set()
            self.data_gate = self.rcpt_gate = None
            self.sessions = self.auth_attempts = self.auth_failures = self.message_count = 0
            self.peak_open = self.open_now
            self.spans.clear()

    # --- lifecycle -------------------------------------------------------------------------
    @property
    def is_running(self) -> bool:
        """True between start() and stop()."""
        return bool(self._controllers)

    def start(self) -> SmtpServer:
        """Start one controller thread per port; returns self."""
        if self._controllers:
            return self
        _quiet_aiosmtpd(True)
        handler = _Handler(self)
        ctx = self.certs.server_context(self.cert)
        common: dict[str, Any] = {
            "hostname": self.host,
            "server_hostname": self.hostname,
            "authenticator": self._authenticate,
            "ready_timeout": 10.0,
            "data_size_limit": self.data_size_limit,
            "enable_SMTPUTF8": self.smtputf8,
        }
        specs: list[dict[str, Any]] = [
            {"port": self.port_starttls, "tls_context": ctx, "auth_required": True,
             "auth_require_tls": True, "implicit_tls": False},
            {"port": self.port_tls, "ssl_context": ctx, "auth_required": True,
             "auth_require_tls": True, "implicit_tls": True},
        ]  # fmt: skip
        if self.port_plain is not None:
            specs.append(
                {"port": self.port_plain, "auth_required": False,
                 "auth_require_tls": False, "implicit_tls": False}
            )  # fmt: skip
        try:
            for spec in specs:
                controller = _Controller(handler, **common, **spec)
                controller.start()
                self._controllers.append(controller)
        except BaseException:
            self.stop()
            raise
        self.clear()  # the controllers' readiness probes count as sessions
        return self

    def stop(self) -> None:
        """Stop every controller thread."""
        controllers, self._controllers = self._controllers, []
        for controller in controllers:
            controller.stop()
        if controllers:
            _quiet_aiosmtpd(False)

    # --- callbacks from the controller threads ---------------------------------------------
    def _authenticate(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: Any,
    ) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and self.users.get(
            auth_data.login.decode(errors="replace")
        ) == auth_data.password.decode(errors="replace")
        with self._lock:
            self.auth_attempts += 1
            self.auth_failures += 0 if ok else 1
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    def _next_data_reply(self) -> str | None:
        with self._lock:
            return self.data_replies.pop(0) if self.data_replies else None

    def _opened(self, change: int, span: tuple[float, float] | None = None) -> None:
        with self._lock:
            self.open_now += change
            self.peak_open = max(self.peak_open, self.open_now)
            if span is not None:
                self.spans.append(span)

    def overlap(self, sessions: int) -> float:
        """The longest time (s) that more than ``sessions`` closed sessions were open at once: a
        client limit of ``sessions`` shows as ~0 (the server may see a closing session's end just
        after the next one's start)."""
        edges = sorted([(a, 1) for a, _ in self.spans] + [(b, -1) for _, b in self.spans])
        longest, open_, since = 0.0, 0, 0.0
        for at, change in edges:
            if open_ > sessions:
                longest = max(longest, at - since)
            open_ += change
            since = at
        return longest

    def _count(self, field: str) -> None:
        with self._lock:
            setattr(self, field, getattr(self, field) + 1)

    def _record(self, message: ReceivedMessage) -> None:
        if self.deliver is not None:
            for rcpt in message.rcpt_tos:
                self.deliver(rcpt, message.data)
        with self._lock:
            self.message_count += 1
            if self.keep_messages:
                self.messages.append(message)


def _read_users(path: Path) -> dict[str, str]:
    """`user:password` per line (the password is everything after the first colon)."""
    users: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, password = line.partition(":")
            users[name.strip()] = password
    return users


class SmtpProcess(ManagedProcess):
    """`SmtpServer` in its own process (no message inspection; for benchmarks and `make up`)."""

    name = "smtp"
    stop_timeout = 10.0

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        certs: TestCertificates,
        users: dict[str, str],
        cert_name: str = "server",
        *,
        plain: bool = False,
        deliver_to_dovecot: Path | None = None,
        pipelining: bool = False,
    ) -> None:
        """``deliver_to_dovecot``: a Dovecot config; accepted mail goes into its users' INBOX."""
        super().__init__(workdir)
        self.pipelining = pipelining
        self.host = LOCALHOST
        self.certs = certs
        self.users = dict(users)
        self.cert_name = cert_name
        self.deliver_to_dovecot = deliver_to_dovecot
        self.port_starttls = free_port()
        self.port_tls = free_port()
        self.port_plain = free_port() if plain else None
        self.users_path = self.workdir / "smtp-users"

    def command(self) -> list[str]:
        """Our own interpreter running this module."""
        argv = [
            sys.executable, "-m", "mailwarden_servers.smtp",
            "--port-starttls", str(self.port_starttls),
            "--port-tls", str(self.port_tls),
            "--certs", str(self.certs.directory),
            "--cert", self.cert_name,
            "--users-file", str(self.users_path),
        ]  # fmt: skip
        if self.port_plain is not None:
            argv += ["--port-plain", str(self.port_plain)]
        if self.deliver_to_dovecot is not None:
            argv += ["--deliver-to-dovecot", str(self.deliver_to_dovecot)]
        if self.pipelining:
            argv.append("--pipelining")
        return argv

    def prepare(self) -> None:
        """Write the users file (0600: it holds passwords)."""
        fd = os.open(self.users_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.writelines(f"{u}:{p}\n" for u, p in self.users.items())

    def wait_ready(self) -> None:
        """Wait for the "smtp ready" line: ports open earlier, before counters are reset."""
        deadline = time.monotonic() + self.start_timeout
        while READY_LINE not in self.log_since_start():
            if self.poll() is not None:
                raise ServerStartError(f"SMTP process exited with {self.poll()}\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise ServerStartError(f"SMTP process not ready\n{self.log_tail()}")
            time.sleep(0.02)
        wait_port(self.host, self.port_tls, self, 5.0)
        with socket.create_connection((self.host, self.port_starttls), timeout=5) as sock:
            banner = sock.recv(512)
        if not banner.startswith(b"220"):
            raise ServerStartError(f"unexpected SMTP banner {banner!r}\n{self.log_tail()}")


def main(argv: list[str] | None = None) -> int:
    """Run SmtpServer until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m mailwarden_servers.smtp", description=__doc__)
    parser.add_argument("--port-starttls", type=int, required=True)
    parser.add_argument("--port-tls", type=int, required=True)
    parser.add_argument("--port-plain", type=int, default=None)
    parser.add_argument("--certs", type=Path, required=True, help="directory from TestCertificates")
    parser.add_argument(
        "--cert",
        default="server",
        choices=["server", "expired", "wrong_host", "self_signed", "expiring_soon"],
    )
    parser.add_argument("--users-file", type=Path, required=True, help="user:password lines")
    parser.add_argument("--keep-messages", action="store_true", help="keep bodies in memory")
    parser.add_argument(
        "--deliver-to-dovecot", type=Path, default=None, help="dovecot.conf: store mail in its users' INBOX"
    )
    parser.add_argument("--pipelining", action="store_true", help="advertise PIPELINING (RFC 2920)")
    args = parser.parse_args(argv)
    deliver = None
    if args.deliver_to_dovecot is not None:
        config = args.deliver_to_dovecot

        def deliver(rcpt: str, data: bytes) -> None:
            doveadm_save(config, rcpt.split("@", 1)[0], data)

    certs = TestCertificates.load(args.certs)
    cert: CertPair = getattr(certs, args.cert)
    server = SmtpServer(
        certs,
        _read_users(args.users_file),
        cert,
        plain=args.port_plain is not None,
        keep_messages=args.keep_messages,
        port_starttls=args.port_starttls,
        port_tls=args.port_tls,
        port_plain=args.port_plain,
        deliver=deliver,
        pipelining=args.pipelining,
    )
    done = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: done.set())
    started = time.monotonic()
    server.start()
    print(f"{READY_LINE} starttls={server.port_starttls} tls={server.port_tls} "
          f"plain={server.port_plain}", flush=True)  # fmt: skip
    while not done.wait(1.0):
        pass
    server.stop()
    print(
        f"smtp stopped after {time.monotonic() - started:.1f}s: sessions={server.sessions} "
        f"auth={server.auth_attempts} failures={server.auth_failures} "
        f"messages={server.message_count}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
