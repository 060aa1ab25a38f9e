"""The servers of a benchmark run: a tuned private Dovecot, the SMTP process and latency proxies.

Everything listens on 127.0.0.1 only. See bench/README.md for why each Dovecot setting is there.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Self

from bench.latency_proxy import LatencyProxyProcess
from bench.models import Endpoint
from mailwarden_servers import DovecotServer, SmtpProcess, TestCertificates
from mailwarden_servers.running import Running

__all__ = ["MailStack", "dovecot_tuning"]


def dovecot_tuning(cores: int) -> dict[str, int | bool | str]:
    """Keyword arguments for DovecotServer so that Dovecot is not the artificial bottleneck."""
    return {
        # Login processes serve many connections each and stay alive ("high-performance mode"):
        # no fork + exec + TLS context per connection; one per core, spawned before the run.
        "login_service_count": 0,
        "login_process_min_avail": cores,
        # Connections per process (login, auth, anvil) and processes per service: far above
        # the benchmark's concurrency, so nothing queues inside Dovecot.
        "client_limit": 4096,
        "process_limit": 1024,
        # The 2-15 s per-IP penalty after failed logins would throttle every client behind one
        # loopback address after the first wrong password (auth_failure_delay is 0 as well).
        "auth_penalty": False,
        # Post-login `imap` processes are reused (all users share one UID, so this is safe)
        # and a few are kept ready, instead of one fork + exec per login.
        "extra_config": (f"service imap {{\n  service_count = 1000\n  process_min_avail = {cores}\n}}\n"),
    }


class MailStack(Running):
    """Start with `with MailStack(workdir, users) as stack:`; `endpoint(rtt)` gives the ports."""

    def __init__(
        self,
        workdir: Path,
        users: dict[str, str],
        *,
        cores: int | None = None,
        proxy_at_zero: bool = False,
    ) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.workdir.chmod(0o755)  # Dovecot's unprivileged processes must traverse it
        self.cores = cores or os.cpu_count() or 1
        self.proxy_at_zero = proxy_at_zero
        self.certs = TestCertificates.create(workdir / "certs")
        tuning = dovecot_tuning(self.cores)
        self.dovecot = DovecotServer(
            workdir / "dovecot",
            self.certs,
            users,
            process_limit=int(tuning["process_limit"]),
            client_limit=int(tuning["client_limit"]),
            login_service_count=int(tuning["login_service_count"]),
            login_process_min_avail=int(tuning["login_process_min_avail"]),
            auth_penalty=bool(tuning["auth_penalty"]),
            extra_config=str(tuning["extra_config"]),
        )
        self.smtp = SmtpProcess(workdir / "smtp", self.certs, users)
        self._proxies: dict[float, tuple[LatencyProxyProcess, LatencyProxyProcess]] = {}

    def start(self) -> Self:
        self.dovecot.start()
        self.smtp.start()
        return self

    def stop(self) -> None:
        for imap_proxy, smtp_proxy in self._proxies.values():
            imap_proxy.stop()
            smtp_proxy.stop()
        self._proxies.clear()
        self.smtp.stop()
        self.dovecot.stop()

    def endpoint(self, rtt_ms: float) -> Endpoint:
        """Ports for a round-trip time: RTT 0 goes direct unless `proxy_at_zero`."""
        ca = str(self.certs.ca)
        if rtt_ms == 0 and not self.proxy_at_zero:
            return Endpoint(
                imaps_port=self.dovecot.imaps_port,
                smtp_port=self.smtp.port_starttls,
                rtt_ms=0,
                via="direct",
                ca_file=ca,
            )
        imap_proxy, smtp_proxy = self._proxies_for(rtt_ms)
        return Endpoint(
            imaps_port=imap_proxy.port, smtp_port=smtp_proxy.port, rtt_ms=rtt_ms, via="proxy", ca_file=ca
        )

    def process_groups(self, endpoint: Endpoint) -> dict[str, list[int]]:
        """The server-side process trees to measure for a run against `endpoint`."""
        groups = {"dovecot": _pids(self.dovecot.pid), "smtp": _pids(self.smtp.pid)}
        if endpoint.via == "proxy":
            imap_proxy, smtp_proxy = self._proxies_for(endpoint.rtt_ms)
            groups["proxy"] = _pids(imap_proxy.pid, smtp_proxy.pid)
        return groups

    def _proxies_for(self, rtt_ms: float) -> tuple[LatencyProxyProcess, LatencyProxyProcess]:
        if rtt_ms not in self._proxies:
            one_way = rtt_ms / 2
            pdir = self.workdir / "proxies"
            imap_proxy = LatencyProxyProcess(pdir, self.dovecot.imaps_port, one_way).start()
            smtp_proxy = LatencyProxyProcess(pdir, self.smtp.port_starttls, one_way).start()
            self._proxies[rtt_ms] = (imap_proxy, smtp_proxy)
        return self._proxies[rtt_ms]


def _pids(*pids: int | None) -> list[int]:
    return [p for p in pids if p is not None]
