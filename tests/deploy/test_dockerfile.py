"""The one Dockerfile: multi-stage, one service per build arg, non-root, graceful shutdown."""

from __future__ import annotations

import re

import pytest
from deploy_helpers import ROOT, UVICORN_GRACEFUL_S


@pytest.fixture(scope="module")
def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, args = line.partition(" ")
            pairs.append((op.upper(), args.strip()))
    return pairs


def _stages(instructions: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for op, args in instructions:
        if op == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((op, args))
    return stages


def test_multi_stage_build_copies_only_the_venv(instructions: list[tuple[str, str]]) -> None:
    stages = _stages(instructions)
    assert len(stages) >= 2
    names = [re.search(r"\bAS\s+(\S+)", s[0][1], re.I) for s in stages]
    assert all(names), "every stage is named"
    build, runtime = stages[0], stages[-1]
    assert any(op == "RUN" and "uv sync" in a and "--frozen" in a and "--no-dev" in a for op, a in build)
    assert any(op == "RUN" and '--package "$SERVICE"' in a for op, a in build)
    copies = [a for op, a in runtime if op == "COPY"]
    assert copies and all(a.startswith(f"--from={names[0].group(1)}") for a in copies)  # type: ignore[union-attr]


def test_service_is_a_required_build_arg(instructions: list[tuple[str, str]]) -> None:
    for stage in _stages(instructions):
        assert ("ARG", "SERVICE") in stage
    assert any(op == "RUN" and 'test -n "$SERVICE"' in a for op, a in instructions)


def test_runs_as_a_numeric_non_root_user(instructions: list[tuple[str, str]]) -> None:
    runtime = _stages(instructions)[-1]
    users = [a for op, a in runtime if op == "USER"]
    assert users, "the runtime stage sets USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "numeric uid, so runAsNonRoot can be verified"


def test_serves_port_8000_and_shuts_down_gracefully(instructions: list[tuple[str, str]]) -> None:
    ops = dict(instructions)
    assert ops["EXPOSE"] == "8000"
    assert "/healthz" in ops["HEALTHCHECK"]
    cmd = [a for op, a in instructions if op == "CMD"][-1]
    assert "exec uvicorn" in cmd  # uvicorn is PID 1 and receives SIGTERM itself
    assert "--factory" in cmd and f"--timeout-graceful-shutdown {UVICORN_GRACEFUL_S}" in cmd
