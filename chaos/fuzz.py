"""HTTP and NATS request-reply APIs fuzzed with Hypothesis from each service's own OpenAPI document.

Every operation of every service gets bodies, path and query parameters drawn from its schema
(valid-shaped values, wrong types, missing and unknown fields, random JSON). Pass: no 5xx, every
422 names the field at fault, and every request-reply answer is well-formed (``ok`` with a
result, or a 4xx naming its fields); the services stay ready.
"""

from __future__ import annotations

import asyncio
import json
import string
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chaos.harness import Figure, System, private_nats
from chaos.infra import Infra
from mailwarden_runtime.auth import bearer_header

Json = Any
SKIP_PATHS = {"/openapi.json", "/docs", "/redoc", "/docs/oauth2-redirect"}

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
any_json = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
ident = st.text(string.ascii_letters + string.digits + "_-", min_size=1, max_size=12)


def from_schema(schema: Json, components: dict[str, Json], depth: int = 0) -> st.SearchStrategy[Json]:
    """A strategy for values of ``schema``, often valid, sometimes not (wrong types, gaps)."""
    if depth > 6:
        return scalars
    if "$ref" in schema:
        return from_schema(components[schema["$ref"].rsplit("/", 1)[1]], components, depth + 1)
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            return st.one_of([from_schema(s, components, depth + 1) for s in schema[key]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"]) | scalars
    if "const" in schema:
        return st.just(schema["const"]) | scalars
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        required = set(schema.get("required", []))
        fields = {k: from_schema(v, components, depth + 1) for k, v in props.items()}

        @st.composite
        def objects(draw: st.DrawFn) -> dict[str, Json]:
            out: dict[str, Json] = {}
            for name, strat in fields.items():
                if name in required or draw(st.booleans()):
                    out[name] = draw(strat)
            if out and draw(st.integers(0, 9)) == 0:
                out.pop(draw(st.sampled_from(sorted(out))))  # a required field goes missing
            if draw(st.integers(0, 9)) == 0:
                out[draw(st.text(max_size=6))] = draw(scalars)  # an unknown field
            return out

        return objects()
    if kind == "array":
        items = from_schema(schema.get("items", {}), components, depth + 1)
        return st.lists(items, max_size=3) | scalars
    if kind == "string":
        fmt = schema.get("format")
        base: st.SearchStrategy[Json] = st.text(max_size=40)
        if fmt == "email":
            base = st.emails() | base
        elif fmt == "date-time":
            base = st.datetimes().map(lambda d: d.isoformat() + "Z") | base
        elif schema.get("pattern"):
            base = ident | base
        return base | scalars
    if kind == "integer":
        lo, hi = schema.get("minimum", -(2**33)), schema.get("maximum", 2**33)
        return st.integers(int(lo) - 2, int(hi) + 2) | scalars
    if kind == "number":
        return st.floats(allow_nan=False, allow_infinity=False) | scalars
    if kind == "boolean":
        return st.booleans() | scalars
    return any_json


def operations(doc: Json) -> list[tuple[str, str, Json]]:
    out = []
    for path, item in doc.get("paths", {}).items():
        if path in SKIP_PATHS:
            continue
        for method, op in item.items():
            if method in ("get", "post", "put", "patch", "delete"):
                out.append((method.upper(), path, op))
    return out


def request_strategy(path: str, op: Json, components: dict[str, Json]) -> st.SearchStrategy[Json]:
    params = op.get("parameters", [])

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Json]:
        url = path
        query: dict[str, str] = {}
        for p in params:
            value = draw(
                ident
                if p["in"] == "path" and draw(st.booleans())
                else from_schema(p.get("schema", {}), components)
            )
            text = value if isinstance(value, str) else json.dumps(value)
            if p["in"] == "path":
                url = url.replace("{" + p["name"] + "}", quote(text, safe="") or "x")
            elif p["in"] == "query" and (p.get("required") or draw(st.booleans())):
                query[p["name"]] = text
        body = None
        content = (op.get("requestBody") or {}).get("content", {}).get("application/json")
        if content is not None:
            body = draw(from_schema(content["schema"], components) | any_json)
        return {"url": url, "params": query, "body": body}

    return build()


def judge(status: int, text: str) -> str | None:
    """What is wrong with one HTTP answer, or None.

    Every body sent here is JSON (or there is none), so a bad value is a field-level 422, never a
    bare 400 (that would do for a body that is not JSON; ours answer even that with a 422 on ``body``).
    """
    if status >= 500:
        return f"{status}"
    if 300 <= status < 400:
        return f"{status}: a path that is no route must be a 404, not a redirect to another one"
    if status == 400:
        return "400 for a JSON request (a bad field must be a 422 naming it)"
    if status == 422:
        try:
            errors = json.loads(text)["errors"]
        except (ValueError, KeyError, TypeError):
            return "422 without an errors list"
        if not errors or not all(isinstance(e, dict) and e.get("field") for e in errors):
            return "422 without a field"
    return None


def judge_reply(data: bytes) -> str | None:
    try:
        doc = json.loads(data)
    except ValueError:
        return "reply is not JSON"
    if doc.get("ok") is True:
        return None
    status = doc.get("status", 0)
    if not isinstance(status, int) or status >= 500:
        return f"reply status {status}"
    if status == 422 and not (doc.get("errors") and all(e.get("field") for e in doc["errors"])):
        return "422 reply without a field"
    return None


Record = Callable[[str, int, "str | None"], None]
Note = Callable[[str], None]


def _http_case(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    op: Json,
    components: dict[str, Json],
    label: str,
    examples: int,
    loop: asyncio.AbstractEventLoop,
    record: Record,
    redirected: Note,
) -> Callable[[], None]:
    """A Hypothesis test for one HTTP operation; run in a thread, requests go to ``loop``.

    ``run`` stays as it is: with ``derandomize`` its source seeds the examples, so editing it
    changes every request drawn (figures from before would not be comparable).
    """

    async def send(req: dict[str, Json]) -> tuple[int, str]:
        kw: dict[str, Any] = {"params": req["params"]}
        if req["body"] is not None:
            kw["json"] = req["body"]
        resp = await client.request(method, req["url"], **kw)
        if resp.is_redirect:  # which operation, the path sent, where it pointed
            redirected(f"{label}: {resp.request.url.raw_path.decode()} -> {resp.headers.get('location')}")
        return resp.status_code, resp.text

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(request_strategy(path, op, components))
    def run(req: dict[str, Json]) -> None:
        status, text = asyncio.run_coroutine_threadsafe(send(req), loop).result(60)
        record(label, status, judge(status, text))

    return run


def _rpc_case(
    nc: Any, subject: str, examples: int, loop: asyncio.AbstractEventLoop, record: Record, token: str
) -> Callable[[], None]:
    """A Hypothesis test for one request-reply subject: random JSON and random bytes."""

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None)
    @given(st.one_of(any_json.map(lambda v: json.dumps(v).encode()), st.binary(max_size=40)))
    def run(body: bytes) -> None:
        request = nc.request(subject, body, timeout=10, headers=bearer_header(token))
        reply = asyncio.run_coroutine_threadsafe(request, loop).result(30)
        try:
            status = 200 if json.loads(reply.data).get("ok") else int(json.loads(reply.data).get("status", 0))
        except (ValueError, TypeError, AttributeError):
            status = 0
        record(subject, status, judge_reply(reply.data))

    return run


async def fuzz_apis(infra: Infra, workdir: Path, *, examples: int) -> Figure:
    fig = Figure("fuzzed HTTP + NATS APIs")
    loop = asyncio.get_running_loop()
    async with (
        private_nats(workdir / "nats") as nats_server,
        System(workdir, nats_server.url, infra.mongo_uri, infra.certs) as system,
    ):
        problems: Counter[str] = Counter()
        statuses: Counter[int] = Counter()
        redirects: list[str] = []
        requests = 0

        def record(label: str, status: int, wrong: str | None) -> None:
            nonlocal requests
            requests += 1
            statuses[status] += 1
            if wrong:
                problems[f"{label}: {wrong}"] += 1

        started = time.monotonic()
        for name, svc in system.services.items():
            doc = (await svc.client.get("/openapi.json")).json()
            components = doc.get("components", {}).get("schemas", {})
            for method, path, op in operations(doc):
                run = _http_case(
                    svc.client,
                    method,
                    path,
                    op,
                    components,
                    f"{name} {method} {path}",
                    examples,
                    loop,
                    record,
                    redirects.append,
                )
                await asyncio.to_thread(run)

            # The same operations over NATS request-reply, with random JSON and non-JSON bodies.
            subjects = sorted(op.subject for op in svc.app.state.runtime.rpc_operations)
            for subject in subjects:
                await asyncio.to_thread(
                    _rpc_case(system.nc, subject, max(3, examples // 3), loop, record, system.token)
                )
        for name, svc in system.services.items():
            ready = await svc.client.get("/readyz")
            fig.check(ready.status_code == 200, f"{name} not ready after fuzzing")
        fig.figures["requests"] = requests
        # Each code (until 2026-12-03 per hundred: "400" was every 4xx, docs/reliability.md finding 13).
        fig.figures["by_status"] = dict(sorted(statuses.items()))
        fig.figures["5xx_or_unnamed_422"] = sum(problems.values())
        if redirects:
            fig.figures["redirects"] = redirects[:5]
        fig.figures["seconds"] = round(time.monotonic() - started, 1)
        fig.check(not problems, f"bad answers: {dict(problems.most_common(8))}")
    return fig
