"""HTTP (from each /openapi.json) and NATS request-reply APIs fuzzed with Hypothesis, few examples each."""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos.fuzz import fuzz_apis, judge
from chaos.infra import Infra

pytestmark = pytest.mark.integration


def test_the_judge_catches_what_it_must() -> None:
    assert judge(500, "") and judge(422, '{"errors": []}') and judge(422, '{"errors": [{"field": ""}]}')
    assert judge(422, '{"errors": [{"field": "email", "message": "x"}]}') is None
    assert judge(400, '{"detail": "bad request"}')  # a JSON body's bad field is a 422 naming it


async def test_apis_never_5xx_and_name_the_field(infra: Infra, tmp_path: Path) -> None:
    fig = await fuzz_apis(infra, tmp_path, examples=8)
    print(fig.line())
    assert fig.ok, fig.line()
