"""The bench's resource monitor: process trees from one read of the process table, and the watcher's count."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import psutil

from bench.e2e import _Watch
from bench.monitor import ResourceMonitor, _children_of, _rss, _tree_pids

CHILD = "import subprocess, sys; subprocess.run([sys.executable, '-c', 'import time; time.sleep(30)'])"


def _wait_for_children(pid: int, n: int) -> None:
    deadline = time.monotonic() + 10
    while len(psutil.Process(pid).children(recursive=True)) < n:
        assert time.monotonic() < deadline, "the child process did not start"
        time.sleep(0.02)


def test_a_tree_read_from_the_process_table_is_the_tree_psutil_walks() -> None:
    parent = subprocess.Popen([sys.executable, "-c", CHILD])
    try:
        _wait_for_children(parent.pid, 1)
        expected = {parent.pid} | {p.pid for p in psutil.Process(parent.pid).children(recursive=True)}
        assert set(_tree_pids([parent.pid], _children_of())) == expected
        rss, count = _rss(sorted(expected))
        assert count == 2
        assert rss >= sum(psutil.Process(p).memory_info().rss for p in expected) // 2
        with ResourceMonitor({"tree": [parent.pid]}, interval=0.05) as monitor:
            time.sleep(0.2)
        usage = monitor.usage()["tree"]
        assert usage.processes == 2
        assert usage.peak_rss_mb > 1
    finally:
        for proc in psutil.Process(parent.pid).children(recursive=True):
            proc.kill()
        parent.kill()
        parent.wait()


def test_a_process_that_is_gone_counts_nothing() -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert _rss([gone.pid]) == (0, 0)
    assert os.getpid() in _tree_pids([os.getpid()], _children_of())


def test_the_watch_is_done_when_every_test_of_its_job_has_a_status_and_an_alert_in_any_order() -> None:
    async def scenario() -> None:
        watch = _Watch(expected=3)
        watch.requested["t0"] = ("m0", "other-job", 0.0)
        for n in range(3):
            watch.requested[f"t{n + 1}"] = (f"m{n + 1}", "job", 0.0)
        watch.status["t1"] = (0.0, {})
        watch.job_id = "job"
        watch.check()  # what came before the job id is counted once
        assert not watch.done.is_set()
        watch.alerted["t1"] = 0.0
        watch.check("t1")
        watch.alerted["t2"] = 0.0  # an alert before the status
        watch.check("t2")
        watch.status["t2"] = (0.0, {})
        watch.check("t2")
        watch.status["t0"] = (0.0, {})  # another job's test never completes this one
        watch.alerted["t0"] = 0.0
        watch.check("t0")
        assert not watch.done.is_set()
        watch.status["t3"] = (0.0, {})
        watch.alerted["t3"] = 0.0
        watch.check("t3")
        assert watch.done.is_set()

    asyncio.run(scenario())
