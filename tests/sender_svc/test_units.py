"""The pure parts: per-mailbox hints, the rate bucket, MIME addresses and the DATA payload."""

from __future__ import annotations

import time

import pytest

from mailwarden_mailnet.smtp import dot_stuffed
from sender_svc.candidates import Candidates
from sender_svc.mime import AddressError, Built, ascii_domain
from sender_svc.sender import RateLimiter
from sender_svc.submit import Queued


def test_hints_prefer_the_warm_mailbox_then_take_turns_and_skip_throttled_ones() -> None:
    hints = Candidates()
    for mailbox, send in (("a", "a1"), ("a", "a2"), ("b", "b1"), ("c", "c1"), ("a", "a1")):
        hints.add(mailbox, send)
    assert len(hints) == 4  # a1 once
    assert hints.take("a", lambda m: True) == ("a", "a1")
    assert hints.take(None, lambda m: m != "b") == ("c", "c1")  # a went to the back, b is throttled
    assert hints.take(None, lambda m: True) == ("b", "b1")
    assert hints.take("zzz", lambda m: True) == ("a", "a2")
    assert hints.take(None, lambda m: True) is None and len(hints) == 0


def test_the_rate_bucket_allows_a_burst_then_the_rate() -> None:
    rate = RateLimiter(per_minute=60, burst=2)
    assert rate.try_take("m") and rate.try_take("m")
    assert not rate.try_take("m") and rate.try_take("other")
    rate.refund("m")
    assert rate.try_take("m")
    wait = rate.take("m")
    assert 0.9 < wait <= 1.0
    time.sleep(0.05)
    assert not rate.try_take("m")


@pytest.mark.parametrize(
    ("address", "expected", "utf8"),
    [
        ("Ann@Example.ORG", "Ann@example.org", False),
        ("jörg@bücher.example", "jörg@xn--bcher-kva.example", True),
        ("a.b+tag@mail.example", "a.b+tag@mail.example", False),
    ],
)
def test_addresses_get_idna_domains(address: str, expected: str, utf8: bool) -> None:
    assert ascii_domain(address, "to.0.address") == (expected, utf8)


@pytest.mark.parametrize(
    "address", ["a@-x-.example", "a@localhost", "a..b@x.example", "a b@x.example", "@x.example"]
)
def test_undeliverable_addresses_are_refused(address: str) -> None:
    with pytest.raises(AddressError) as info:
        ascii_domain(address, "cc.2.address")
    assert info.value.field == "cc.2.address"


def test_the_payload_doubles_leading_dots_and_ends_with_a_lone_dot() -> None:
    assert dot_stuffed(b"a\n.b\r\n..c") == b"a\r\n..b\r\n...c\r\n.\r\n"
    assert dot_stuffed(b".\r\n") == b"..\r\n.\r\n"


def test_a_mailbox_another_loop_sends_for_comes_after_the_idle_ones() -> None:
    hints = Candidates()
    for mailbox, send in (("a", "a1"), ("a", "a2"), ("b", "b1")):
        hints.add(mailbox, send)
    hints.busy("a", +1)  # one loop is sending a's first: a second login to a's server would be needed
    assert hints.take(None, lambda m: True) == ("b", "b1")
    assert hints.take(None, lambda m: True) == ("a", "a1")  # nothing else left: a busy one after all
    hints.busy("a", -1)


def test_a_send_queued_here_comes_with_its_claimed_document_and_message_once() -> None:
    hints = Candidates()
    queued = Queued(
        {"_id": "s1", "lease_token": "t"}, Built(b"x", ["a@example.org"], False), ("a@x.org", "A")
    )
    hints.add("a", "s1", queued)
    assert hints.take(None, lambda m: True) == ("a", "s1")
    assert hints.held("s1") is queued and hints.held("s1") is None
