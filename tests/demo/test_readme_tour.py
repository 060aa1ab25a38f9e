"""`make demo` and the README's quick tour: the block is run, unchanged, against the demo stack.

The demo runs as a user starts it (``python -m mailwarden_servers.demo``, its own processes on the
real servers); the README's ``sh`` block under "Quick tour" is extracted and run by bash with the
installed ``mailwarden`` on PATH. The demo prints the same tour, so the two cannot drift apart.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailwarden_servers.demo import TOUR

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def readme_tour() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick tour", 1)[1]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, "no sh block under the README's Quick tour"
    return match.group(1)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MW_", "NATS_", "MONGODB_"))}
    env.update(PATH=f"{BIN}:{env.get('PATH', '/usr/bin:/bin')}", COLUMNS="200", NO_COLOR="1", TERM="dumb")
    return env


@pytest.fixture(scope="module")
def demo(workdir: Path) -> Iterator[tuple[Path, str]]:
    """``make demo`` (without the venv bootstrap): started, seeded, its first alerts seen."""
    data = workdir / "demo"  # 0755 all the way: Dovecot's unprivileged processes traverse it
    log = (workdir / "demo.log").open("w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailwarden_servers.demo", "--data-dir", str(data)],
        cwd=ROOT, env=_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while "demo ready" not in Path(log.name).read_text():
            assert proc.poll() is None, Path(log.name).read_text()
            assert time.monotonic() < deadline, Path(log.name).read_text()
            time.sleep(0.5)
        yield data, Path(log.name).read_text()
    finally:
        proc.send_signal(signal.SIGTERM)  # only the demo's own process; it stops what it started
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_demo_shows_a_success_and_an_error_alert_and_prints_the_readme_tour(demo: tuple[Path, str]) -> None:
    data, output = demo
    timings = json.loads((data / "timings.json").read_text())
    assert set(timings) == {"success", "error"}, output  # how fast is the demo's report, not asserted here
    assert readme_tour() == TOUR
    assert TOUR in output


def test_the_readme_tour_runs_unchanged_against_the_demo(demo: tuple[Path, str]) -> None:
    data, _ = demo
    nats_url = json.loads((data / "endpoints.json").read_text())["nats_url"]
    script = f"set -euo pipefail\nexport MW_NATS_URL={nats_url}\n{readme_tour()}"
    done = subprocess.run(
        ["bash", "-c", script], cwd=data, env=_env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    out = done.stdout
    # the demo's wall had a success and an error alert; the fixed password resolved the error
    assert "auth_failed" in out and "resolved" in out, out
    assert "carol" in out and "success" in out, out
