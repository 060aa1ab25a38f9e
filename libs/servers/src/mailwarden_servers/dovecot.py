"""A private Dovecot (IMAP + POP3, plain/STARTTLS and implicit TLS) on four free ports."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path
from string import Template

from mailwarden_servers.certs import CertPair, TestCertificates
from mailwarden_servers.ports import LOCALHOST, ServerStartError, free_port, wait_port
from mailwarden_servers.process import ManagedProcess

__all__ = ["DovecotServer", "dovecot_binary"]

MAIL_UID = 65534  # nobody on Debian: owns the maildirs in root mode
MAIL_GID = 65534
DH_FILE = Path("/usr/share/dovecot/dh.pem")

_CONFIG = Template("""\
# Rendered by mailwarden_servers.dovecot; do not edit.
protocols = imap pop3
listen = $host
instance_name = $instance
base_dir = $root/run
state_dir = $root/state
log_path = $log_path
ssl = yes
ssl_cert = <$cert
ssl_key = <$key
$dh_line
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
mail_location = maildir:$root/mail/%u/Maildir
first_valid_uid = 1
default_process_limit = $process_limit
default_client_limit = $client_limit
$privileges
$anvil
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $root/users
}
userdb {
  driver = static
  args = uid=$mail_uid gid=$mail_gid home=$root/mail/%u
}
service imap-login {
  inet_listener imap {
    port = $imap_port
  }
  inet_listener imaps {
    port = $imaps_port
    ssl = yes
  }
  service_count = $login_service_count
  process_min_avail = $login_process_min_avail
$login_chroot}
service pop3-login {
  inet_listener pop3 {
    port = $pop3_port
  }
  inet_listener pop3s {
    port = $pop3s_port
    ssl = yes
  }
  service_count = $login_service_count
  process_min_avail = $login_process_min_avail
$login_chroot}
protocol imap {
  mail_max_userip_connections = $max_userip
}
protocol pop3 {
  pop3_uidl_format = %08Xu%08Xv
  mail_max_userip_connections = $max_userip
}
""")


# Dovecot delays every login from an IP after a failed one (2 s, 4 s, ... 15 s). Tests fail
# logins on purpose, so by default the auth process gets no penalty socket (mode 0).
_NO_PENALTY = "  unix_listener anvil-auth-penalty {\n    mode = 0\n  }\n"


def dovecot_binary() -> str:
    """Path of dovecot; /usr/sbin is often missing from PATH."""
    return shutil.which("dovecot") or "/usr/sbin/dovecot"


def doveadm_binary() -> str:
    """Path of doveadm (Debian: /usr/bin)."""
    return shutil.which("doveadm") or "/usr/bin/doveadm"


def doveadm_save(config: Path, user: str, message: bytes, mailbox: str = "INBOX") -> None:
    """Store a raw RFC 5322 message in ``user``'s mailbox of the Dovecot configured by ``config``."""
    result = subprocess.run(
        [doveadm_binary(), "-c", str(config), "save", "-u", user, "-m", mailbox],
        input=message,
        capture_output=True,
        check=False,
        timeout=30,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"doveadm save for {user} failed ({result.returncode}): "
            f"{result.stderr.decode(errors='replace').strip()}"
        )


def _check_traversable(path: Path) -> None:
    """Dovecot's auth worker and mail processes drop root: every parent needs o+x."""
    for p in [path, *path.parents]:
        if not p.stat().st_mode & stat.S_IXOTH:
            raise PermissionError(
                f"{p} is not world-traversable (mode {stat.filemode(p.stat().st_mode)}); "
                "Dovecot logins would fail with [UNAVAILABLE]. Use a 0755 work directory "
                "(tempfile.mkdtemp() and pytest's tmp_path are 0700)."
            )


class DovecotServer(ManagedProcess):
    """Dovecot with a passwd-file of plaintext users and maildirs under `workdir`.

    Plain ports offer STARTTLS; the `s` ports are implicit TLS. As root (CI) mail belongs to
    nobody; as another user everything runs unprivileged under that user. Tuning knobs for
    benchmarks: `process_limit`, `client_limit` (Dovecot defaults), `login_service_count`
    (1 = one process per login, 0 = reuse), `login_process_min_avail` and `auth_penalty`
    (Dovecot's per-IP delay after failed logins; off by default), `max_userip_connections`
    (Dovecot's default 10 answers further logins of one user from one address `NO [LIMIT]`);
    anything else via `extra_config`.
    """

    name = "dovecot"
    stop_timeout = 20.0  # SIGTERM takes ~1 s, ~6 s right after start

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        certs: TestCertificates,
        users: dict[str, str],
        cert: CertPair | None = None,
        *,
        process_limit: int = 100,
        client_limit: int = 1000,
        login_service_count: int = 1,
        login_process_min_avail: int = 0,
        auth_penalty: bool = False,
        max_userip_connections: int = 10,
        extra_config: str = "",
    ) -> None:
        super().__init__(workdir)
        self.workdir.chmod(0o755)
        self.host = LOCALHOST
        self.certs = certs
        self.cert = cert or certs.server
        self.imap_port, self.imaps_port = free_port(), free_port()
        self.pop3_port, self.pop3s_port = free_port(), free_port()
        self.process_limit = process_limit
        self.client_limit = client_limit
        self.login_service_count = login_service_count
        self.login_process_min_avail = login_process_min_avail
        self.auth_penalty = auth_penalty
        self.max_userip_connections = max_userip_connections
        self.extra_config = extra_config
        self.config_path = self.workdir / "dovecot.conf"
        self.users_path = self.workdir / "users"
        self.mail_dir = self.workdir / "mail"
        self._users: dict[str, str] = {}
        for name, password in users.items():
            self._validate(name, password)
            self._users[name] = password
        self._as_root = os.geteuid() == 0

    @property
    def users(self) -> dict[str, str]:
        """Copy of the current user -> password map."""
        return dict(self._users)

    # --- process hooks ---------------------------------------------------------------------
    def command(self) -> list[str]:
        """Foreground master so our PID is Dovecot's master."""
        return [dovecot_binary(), "-F", "-c", str(self.config_path)]

    def prepare(self) -> None:
        """Render config, users file and mail dir with the ownership Dovecot expects."""
        if self._as_root:
            _check_traversable(self.workdir)
        self.mail_dir.mkdir(exist_ok=True)
        if self._as_root:
            os.chown(self.mail_dir, MAIL_UID, MAIL_GID)
        self._write_users()
        self.config_path.write_text(self.render_config())

    def wait_ready(self) -> None:
        """Ports open before auth is ready: wait for the IMAP and POP3 greetings."""
        deadline = time.monotonic() + self.start_timeout
        for port in (self.imaps_port, self.pop3s_port):
            wait_port(self.host, port, self, self.start_timeout)
        for port, prefix in ((self.imap_port, b"* OK"), (self.pop3_port, b"+OK")):
            self._wait_greeting(port, prefix, deadline)

    # --- users and mail --------------------------------------------------------------------
    def add_user(self, name: str, password: str) -> None:
        """Add or change a user; Dovecot re-reads the passwd-file when it changes."""
        self.add_users({name: password})

    set_password = add_user

    def add_users(self, users: dict[str, str]) -> None:
        """Add or change many users with one rewrite (each rewrite may wait up to 1 s)."""
        for name, password in users.items():
            self._validate(name, password)
        self._users.update(users)
        self._write_users()

    def remove_user(self, name: str) -> None:
        """Delete a user so that later logins fail."""
        self._users.pop(name, None)
        self._write_users()

    def deliver(self, user: str, message: bytes, mailbox: str = "INBOX") -> None:
        """Store a raw RFC 5322 message in a mailbox via `doveadm save` (no SMTP involved)."""
        doveadm_save(self.config_path, user, message, mailbox)

    def deliver_address(self, address: str, message: bytes) -> None:
        """Deliver to the user named by the address' local part (``SmtpServer(deliver=...)``)."""
        self.deliver(address.split("@", 1)[0], message)

    def reload(self) -> None:
        """Re-render the config (e.g. after changing `cert`) and SIGHUP the master."""
        self.config_path.write_text(self.render_config())
        self.signal(signal.SIGHUP)

    # --- internals -------------------------------------------------------------------------
    def render_config(self) -> str:
        """The dovecot.conf text for the current settings."""
        if self._as_root:
            privileges, login_chroot = "", ""
            uid, gid = MAIL_UID, MAIL_GID
        else:
            uid, gid = os.getuid(), os.getgid()
            user, group = pwd.getpwuid(uid).pw_name, grp.getgrgid(gid).gr_name
            privileges = (
                f"default_internal_user = {user}\n"
                f"default_login_user = {user}\n"
                f"default_internal_group = {group}\n"
            )
            login_chroot = "  chroot =\n"
        text = _CONFIG.substitute(
            host=self.host,
            instance=f"mailwarden-{self.imap_port}",
            root=self.workdir,
            log_path=self.log_path,  # same file as our stdout/stderr capture
            cert=self.cert.cert,
            key=self.cert.key,
            dh_line=f"ssl_dh = <{DH_FILE}" if DH_FILE.exists() else "",
            process_limit=self.process_limit,
            client_limit=self.client_limit,
            max_userip=self.max_userip_connections,
            privileges=privileges,
            anvil=f"service anvil {{\n{login_chroot}{'' if self.auth_penalty else _NO_PENALTY}}}",
            mail_uid=uid,
            mail_gid=gid,
            imap_port=self.imap_port,
            imaps_port=self.imaps_port,
            pop3_port=self.pop3_port,
            pop3s_port=self.pop3s_port,
            login_service_count=self.login_service_count,
            login_process_min_avail=self.login_process_min_avail,
            login_chroot=login_chroot,
        )
        return text + self.extra_config

    @staticmethod
    def _validate(name: str, password: str) -> None:
        for value in (name, password):
            if not value or any(c in value for c in ":\n\r"):
                raise ValueError(f"user names/passwords must be non-empty, without ':': {value!r}")

    def _write_users(self) -> None:
        """Atomically replace the passwd-file, 0644 so the `dovecot` auth user can read it."""
        tmp = self.users_path.with_suffix(".tmp")
        tmp.write_text("".join(f"{u}:{{PLAIN}}{p}::::::\n" for u, p in self._users.items()))
        tmp.chmod(0o644)
        # Dovecot notices changes by mtime/size: force a strictly newer mtime so an update
        # within the same second with the same length is still picked up.
        old = self.users_path.stat().st_mtime if self.users_path.exists() else 0.0
        new = max(time.time(), old + 1.0)
        os.utime(tmp, (new, new))
        os.replace(tmp, self.users_path)
        if self.is_running:
            # passwd-file is stat()ed at most once per wall-clock second (ioloop_time): a lookup
            # earlier in this second would keep the old data. Wait for the next second.
            time.sleep(1.0 - time.time() % 1.0 + 0.02)

    def _wait_greeting(self, port: int, prefix: bytes, deadline: float) -> None:
        last = b""
        while time.monotonic() < deadline:
            if self.poll() is not None:
                raise ServerStartError(f"dovecot exited with {self.poll()}\n{self.log_tail()}")
            try:
                with socket.create_connection((self.host, port), timeout=2) as sock:
                    last = sock.recv(512)
                if last.startswith(prefix):
                    return
            except OSError as exc:
                last = str(exc).encode()
            time.sleep(0.05)
        raise ServerStartError(
            f"no {prefix!r} greeting on {self.host}:{port} (last: {last!r})\n{self.log_tail()}"
        )
