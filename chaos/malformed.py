"""A5: malformed messages interleaved with valid ones on every subject a service consumes.

Pass: no service stops being ready; every malformed message is dead-lettered exactly once by
every consumer that reads its subject (one delivery, a field-level reason, the dead-letter metric
counts it); nothing else is dead-lettered and no consumer is left with pending or unacked
messages, so every valid message was handled (a handler that fails naks, which would show).
"""

from __future__ import annotations

import base64
import json
import random
import re
import time
from collections import Counter
from pathlib import Path

from chaos.harness import Figure, System, private_nats
from chaos.infra import Infra
from chaos.samples import CONSUMED, KINDS, ONE_MB, malformed, valid_event
from contracts.envelope import make_envelope
from contracts.subjects import STREAMS
from mailwarden_runtime.bus import _stream_for
from mailwarden_servers import eventually, free_port

MAX_ONE_MB = 12  # 1 MB bodies are costly to store; a dozen make the point


def _matches(pattern: str, subject: str) -> bool:
    p, s = pattern.split("."), subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s) or (token != "*" and token != s[i]):
            return False
    return len(p) == len(s)


async def _metric(system: System, name: str) -> dict[str, float]:
    text = (await system.http("alert-svc").get("/metrics")).text
    out: dict[str, float] = {}
    for m in re.finditer(rf'^{name}\{{consumer="([^"]+)"\}} ([0-9.e+]+)$', text, re.M):
        out[m.group(1)] = float(m.group(2))
    return out


async def malformed_messages(infra: Infra, workdir: Path, *, rounds: int, seed: int = 7) -> Figure:
    """``rounds`` x (one valid + one malformed) per consumed event type; kinds rotate."""
    fig = Figure("A5 malformed messages")
    rng = random.Random(seed)
    async with (
        private_nats(workdir / "nats") as nats_server,
        System(workdir, nats_server.url, infra.mongo_uri, infra.certs) as system,
    ):
        js = system.nc.jetstream()
        consumers: dict[str, str] = {}  # durable -> filter subject
        for spec in STREAMS:
            for info in await js.consumers_info(spec.name):
                if info.config.durable_name:  # the services' consumers; not ephemeral readers (views)
                    consumers[info.name] = info.config.filter_subject or ">"
        dead_before = await _metric(system, "mailwarden_dead_letters_total")
        errors_before = await _metric(system, "mailwarden_handler_errors_total")
        closed_port = free_port()
        bad_seqs: dict[tuple[str, int], str] = {}  # (stream, sequence) -> kind
        bad_subjects: dict[tuple[str, int], str] = {}
        valid = Counter[str]()
        big = 0
        n = 0
        started = time.monotonic()
        for r in range(rounds):
            for kind_of_event in CONSUMED:
                subject, event = valid_event(kind_of_event, n, closed_port)
                env = make_envelope(event, "chaos")
                await js.publish(subject, env.to_bytes(), headers={"Nats-Msg-Id": str(env.id)})
                valid[subject] += 1
                kind = KINDS[(r + n) % len(KINDS)]
                if kind == "one_megabyte":
                    if big >= MAX_ONE_MB:
                        kind = "invalid_json"
                    big += 1
                _, other = valid_event(kind_of_event, n, closed_port)
                bad = malformed(other, kind, rng)
                ack = await js.publish(subject, bad.body)
                bad_seqs[(ack.stream, ack.seq)] = bad.kind
                bad_subjects[(ack.stream, ack.seq)] = subject
                n += 1
        expected = Counter[str]()
        for subject in bad_subjects.values():
            for durable, pattern in consumers.items():
                if _matches(pattern, subject):
                    expected[durable] += 1
        want = sum(expected.values())

        async def all_dead() -> bool:
            info = await js.stream_info("MW_DLQ")
            return bool(info.state.messages >= want)

        try:
            await eventually(all_dead, f"{want} dead letters", 60 + rounds)
        except AssertionError:
            pass
        left = await system.wait_quiet(60)
        fig.figures["malformed"] = len(bad_seqs)
        fig.figures["valid"] = sum(valid.values())
        fig.figures["kinds"] = dict(Counter(bad_seqs.values()))
        fig.figures["consumers"] = len(consumers)
        fig.figures["seconds"] = round(time.monotonic() - started, 1)
        busy = {k: v for k, v in left.items() if v != (0, 0) and "MW_DLQ" not in k}
        fig.check(not busy, f"consumers left with pending/unacked messages: {busy}")

        got = Counter[str]()
        per_message = Counter[tuple[str, tuple[str, int]]]()
        unexpected = 0
        no_field = 0
        redelivered = 0
        for _, body in await system.stream_messages("MW_DLQ"):
            rec = json.loads(body)["data"]
            durable, seq = rec["consumer"], (_stream_for(rec["subject"]), rec["stream_seq"])
            if seq not in bad_seqs:
                unexpected += 1
                continue
            got[durable] += 1
            per_message[(durable, seq)] += 1
            redelivered += int(rec["deliveries"] != 1)
            fields = [e["loc"] for e in rec["errors"] if e.get("loc")]
            no_field += int(not fields)
            if bad_seqs[seq] == "one_megabyte":
                fig.check(
                    rec["body_size"] >= ONE_MB - 100 and rec["truncated"], "1 MB body not recorded as such"
                )
                fig.check(len(base64.b64decode(rec["body_b64"])) <= 64 * 1024, "a dead letter kept > 64 KB")
        twice = sum(1 for c in per_message.values() if c > 1)
        fig.figures["dead_letters"] = f"{sum(got.values())}/{want}"
        fig.figures["dead_lettered_twice"] = twice
        fig.figures["valid_dead_lettered"] = unexpected
        fig.figures["without_field"] = no_field
        fig.check(got == expected, f"dead letters per consumer {dict(got)} != expected {dict(expected)}")
        fig.check(twice == 0, f"{twice} messages dead-lettered more than once")
        fig.check(unexpected == 0, f"{unexpected} dead letters for valid messages")
        fig.check(no_field == 0, f"{no_field} dead letters without a field-level reason")
        fig.check(redelivered == 0, f"{redelivered} malformed messages were delivered more than once")
        dead_after = await _metric(system, "mailwarden_dead_letters_total")
        counted = {d: dead_after.get(d, 0) - dead_before.get(d, 0) for d in expected}
        fig.check(
            all(counted[d] == expected[d] for d in expected),
            f"metric mailwarden_dead_letters_total disagrees: {counted}",
        )
        errors_after = await _metric(system, "mailwarden_handler_errors_total")
        failed = {
            d: v - errors_before.get(d, 0) for d, v in errors_after.items() if v - errors_before.get(d, 0)
        }
        fig.figures["handler_failures"] = sum(failed.values())
        fig.check(not failed, f"valid messages made handlers fail: {failed}")
        for name, svc in system.services.items():
            ready = await svc.client.get("/readyz")
            fig.check(ready.status_code == 200, f"{name} is not ready after the run")
    return fig
