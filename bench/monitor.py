"""CPU seconds and peak RSS of process trees (a server and all its children) over one run.

CPU: every process of the tree counts its own time plus that of its children it has already
reaped, so short-lived workers (a Dovecot `imap` process per login) are counted even when they
are born and gone between two looks. Peak RSS: the largest sum of RSS over the tree, sampled
(default 5 Hz): shared pages count once per process, which overstates a forking server a little.
A sample reads the process table once for every group (`_children_of`): a tree walk per group
(`Process.children`) reads every process's parent each time, which cost the bench process about
as much CPU as alert-svc on a machine with a few hundred processes.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Self

import psutil

from bench.models import Usage
from mailwarden_servers.running import Running

__all__ = ["ResourceMonitor", "machine_busy_s", "tree_cpu_s"]

_PAGE = os.sysconf("SC_PAGE_SIZE")


def _tree(pids: list[int]) -> Iterator[psutil.Process]:
    for pid in pids:
        try:
            root = psutil.Process(pid)
            yield root
            yield from root.children(recursive=True)
        except psutil.Error:
            continue


def tree_cpu_s(pids: list[int]) -> float:
    """CPU seconds used so far by the trees under `pids` (live and reaped processes)."""
    total = 0.0
    for proc in _tree(pids):
        try:
            t = proc.cpu_times()
        except psutil.Error:
            continue  # gone since we listed it: its parent's children_* will have it
        total += t.user + t.system + t.children_user + t.children_system
    return total


def machine_busy_s() -> float:
    """System-wide non-idle CPU seconds so far: shows load from outside the benchmark."""
    t = psutil.cpu_times()
    return float(
        sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
    )


def _children_of() -> dict[int, list[int]]:
    """Every process's children, from one read of the process table (/proc/<pid>/stat)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # gone since the listing
        fields = stat[stat.rfind(b")") + 2 :].split(b" ", 2)  # after "pid (comm) ": state, ppid
        if len(fields) >= 2:
            children.setdefault(int(fields[1]), []).append(int(name))
    return children


def _tree_pids(roots: list[int], children: dict[int, list[int]]) -> list[int]:
    out: list[int] = []
    todo = list(roots)
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def _rss(pids: list[int]) -> tuple[int, int]:
    rss, count = 0, 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm", "rb") as f:
                rss += int(f.read().split()[1]) * _PAGE
            count += 1
        except (OSError, ValueError, IndexError):
            continue  # gone since the table was read
    return rss, count


class ResourceMonitor(Running):
    """`with ResourceMonitor({"dovecot": [pid], ...}) as mon:` ... then `mon.usage()`."""

    def __init__(self, groups: dict[str, list[int]], interval: float = 0.2) -> None:
        self.groups = {name: list(pids) for name, pids in groups.items()}
        self.interval = interval
        self._cpu0: dict[str, float] = {}
        self._cpu1: dict[str, float] = {}
        self._peak: dict[str, int] = dict.fromkeys(self.groups, 0)
        self._procs: dict[str, int] = dict.fromkeys(self.groups, 0)
        self._busy0 = self._busy1 = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample_loop, name="resource-monitor", daemon=True)

    def start(self) -> Self:
        self._busy0 = machine_busy_s()
        self._cpu0 = {name: tree_cpu_s(pids) for name, pids in self.groups.items()}
        self._sample()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:  # started
            self._thread.join()
        self._sample()
        self._cpu1 = {name: tree_cpu_s(pids) for name, pids in self.groups.items()}
        self._busy1 = machine_busy_s()

    @property
    def machine_busy_s(self) -> float:
        """CPU seconds the whole machine was busy (all cores, every process) during the run."""
        return round(self._busy1 - self._busy0, 3)

    def usage(self) -> dict[str, Usage]:
        """Per group: CPU seconds between enter and exit, peak RSS in MiB, most processes seen."""
        return {
            name: Usage(
                cpu_s=round(max(self._cpu1.get(name, 0.0) - self._cpu0.get(name, 0.0), 0.0), 3),
                peak_rss_mb=round(self._peak[name] / 2**20, 1),
                processes=self._procs[name],
            )
            for name in self.groups
        }

    def _sample(self) -> None:
        children = _children_of()
        for name, pids in self.groups.items():
            rss, count = _rss(_tree_pids(pids, children))
            self._peak[name] = max(self._peak[name], rss)
            self._procs[name] = max(self._procs[name], count)

    def _sample_loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()
