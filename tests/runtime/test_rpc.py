"""Request-reply on nats-py: replies, field-level errors, request headers, bounded concurrency."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from pydantic import BaseModel, Field

from mailwarden_runtime.http import DomainError
from mailwarden_runtime.service import ServiceRuntime
from mailwarden_runtime.settings import ServiceSettings


class Greet(BaseModel):
    name: str = Field(min_length=1)


class Greeting(BaseModel):
    text: str


@pytest.fixture
async def client(nats_url: str) -> AsyncIterator[Client]:
    nc = await nats.connect(nats_url)
    yield nc
    await nc.close()


def runtime(nats_url: str, **settings: Any) -> ServiceRuntime:
    name = f"rpc-{uuid.uuid4().hex[:8]}"
    return ServiceRuntime(
        name, ServiceSettings(nats_url=nats_url, log_setup=False, **settings), uses_database=False
    )


async def ask(nc: Client, subject: str, body: bytes, headers: dict[str, str] | None = None) -> Any:
    return json.loads((await nc.request(subject, body, timeout=5, headers=headers)).data)


async def answering(nc: Client, subject: str, body: bytes, timeout_s: float = 10.0) -> Any:
    """The first answer of a service just started, retried while the server says "no responders".

    The runtime flushes its subscriptions before ``start`` returns, yet in two full-suite runs (never
    alone, 25 runs under load) the first request right after it met "no responders"; what the
    server did then is not known. Later requests in the test get no such grace.
    """
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            return await ask(nc, subject, body)
        except nats.errors.NoRespondersError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.1)


async def test_replies_errors_and_headers(nats_url: str, client: Client) -> None:
    rt = runtime(nats_url)
    seen: list[Mapping[str, str]] = []

    async def greet(req: Greet) -> Greeting:
        if req.name == "nobody":
            raise DomainError(404, "no such person", field="name")
        return Greeting(text=f"hello {req.name}")

    async def whoami(req: Greet, headers: Mapping[str, str]) -> dict[str, str]:
        seen.append(headers)
        return {"token": headers.get("Authorization", "")}

    rt.rpc("greet", Greet, greet)
    rt.rpc("whoami", Greet, whoami, with_headers=True)
    await rt.start()
    try:
        subject = f"mailwarden.rpc.{rt.name}"
        assert await answering(client, f"{subject}.greet", b'{"name": "ada"}') == {
            "ok": True,
            "result": {"text": "hello ada"},
        }
        bad = await ask(client, f"{subject}.greet", b'{"name": ""}')
        assert bad["ok"] is False and bad["status"] == 422 and bad["errors"][0]["field"] == "name"
        assert (await ask(client, f"{subject}.greet", b"\xff"))["errors"][0]["field"] == "body"
        missing = await ask(client, f"{subject}.greet", b'{"name": "nobody"}')
        assert (missing["status"], missing["errors"][0]["field"]) == (404, "name")
        token = await ask(client, f"{subject}.whoami", b'{"name": "x"}', {"Authorization": "Bearer t0k"})
        assert token == {"ok": True, "result": {"token": "Bearer t0k"}}
        assert seen and seen[0]["Authorization"] == "Bearer t0k"
    finally:
        await rt.stop()


async def test_concurrency_is_bounded_and_every_request_is_answered(nats_url: str, client: Client) -> None:
    rt = runtime(nats_url, rpc_concurrency=2)
    running = 0
    peak = 0
    release = asyncio.Event()
    two_running = asyncio.Event()

    async def slow(req: Greet) -> str:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if running == 2:
            two_running.set()
        try:
            await release.wait()
        finally:
            running -= 1
        return req.name

    rt.rpc("slow", Greet, slow)
    await rt.start()
    try:
        subject = f"mailwarden.rpc.{rt.name}.slow"
        calls = [
            asyncio.create_task(ask(client, subject, json.dumps({"name": f"n{n}"}).encode()))
            for n in range(6)
        ]
        await asyncio.wait_for(two_running.wait(), 5)
        await asyncio.sleep(0.3)  # give a third request every chance to start if the bound leaked
        assert (running, peak) == (2, 2)
        release.set()
        answers = await asyncio.gather(*calls)
        assert sorted(a["result"] for a in answers) == [f"n{n}" for n in range(6)]
        assert peak == 2
    finally:
        await rt.stop()
