"""bench.tester_only builds requests the tester can open, and only for the mailbox and direction sealed."""

from __future__ import annotations

import json

import pytest

from bench.mailboxes import Mailbox
from bench.models import Endpoint
from bench.tester_only import build_requests, growth_pct, parse_args
from contracts.envelope import make_envelope, parse_envelope
from contracts.events import TestRequested
from contracts.models import Direction, TlsMode
from mailwarden_runtime.crypto import KeyRing, SealError
from mailwarden_runtime.sealing import open_for_test

RING = KeyRing.parse(KeyRing.generate_key_text("transit-test"))
ENDPOINT = Endpoint(imaps_port=10993, smtp_port=10587, rtt_ms=0, via="direct", ca_file="/nonexistent/ca.pem")
BOXES = [Mailbox("u000001", "pw-one", True), Mailbox("u000002", "pw-two", True)]


def test_requests_carry_sealed_logins_bound_to_test_server_and_direction() -> None:
    reqs = build_requests(BOXES, ENDPOINT, RING)
    assert len({r.test_id for r in reqs}) == 2
    first = reqs[0]
    assert first.target.incoming.port == 10993 and first.target.incoming.tls is TlsMode.IMPLICIT
    assert first.target.outgoing.port == 10587 and first.target.outgoing.tls is TlsMode.STARTTLS
    assert first.allowed_ports == [10587, 10993]
    assert first.directions == [Direction.INCOMING, Direction.OUTGOING]
    assert first.credentials is not None and first.credentials.incoming is not None
    host, port = first.target.incoming.host, first.target.incoming.port

    def opened(test_id: str, direction: str, at_port: int) -> dict[str, object]:
        assert first.credentials is not None and first.credentials.incoming is not None
        raw = open_for_test(
            RING, first.credentials.incoming, test_id=test_id, direction=direction, host=host, port=at_port
        )
        return dict(json.loads(raw))

    login = opened(first.test_id, "incoming", port)
    assert login.pop("not_after") and login == {"username": "u000001", "password": "pw-one"}
    with pytest.raises(SealError):  # another test's binding does not open it
        opened(reqs[1].test_id, "incoming", port)
    with pytest.raises(SealError):  # nor the other direction's
        opened(first.test_id, "outgoing", port)
    with pytest.raises(SealError):  # nor another port's
        opened(first.test_id, "incoming", port + 1)


def test_envelope_round_trips_without_plaintext_password() -> None:
    req = build_requests(BOXES[:1], ENDPOINT, RING)[0]
    raw = make_envelope(req, "bench").to_bytes()
    assert b"pw-one" not in raw
    assert parse_envelope(raw, TestRequested).data == req


def test_growth_and_argument_defaults() -> None:
    assert growth_pct(100.0, 105.0) == pytest.approx(5.0)
    assert growth_pct(0.0, 5.0) == 0.0
    args = parse_args(["--tests", "500", "--concurrency", "40"])
    assert args.outstanding == 80 and args.chunk == 100
    with pytest.raises(SystemExit):
        parse_args(["--tester-env", "NOT_MW=1"])
