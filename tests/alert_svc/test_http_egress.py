"""Outbound HTTP through the egress policy (mailwarden_mailnet.http_egress), against real sockets.

The SSRF matrix: every address form the tester refuses, IPv4 in its legacy spellings, names
resolving to private addresses, and redirects to them: each denied, and a local listener that
would answer counts zero connections. Then what a permitted request guarantees: one lookup and a
connection to the checked address (no rebinding), Host and SNI from the URL's name, a deadline
on the whole exchange, a cap on the body read, and bounded concurrency per host and overall.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from http_listener import listening

from contracts.errors import ErrorCode
from mailwarden_mailnet.errors import NetError
from mailwarden_mailnet.http_egress import HostLimiter, HttpEgress, UrlRefused, parse_target
from mailwarden_mailnet.policy import EgressPolicy, parse_networks
from mailwarden_mailnet.resolve import StaticResolver, SystemResolver
from mailwarden_servers import TestCertificates, eventually

NAMES = {
    "intranet.example": ["10.0.0.5"],
    "metadata.example": ["169.254.169.254"],
    "loop.example": ["127.0.0.1"],
    "loop6.example": ["::1"],
    "mapped.example": ["::ffff:127.0.0.1"],
    "mixed.example": ["93.184.216.34", "127.0.0.1"],
}

# Each form names the listener's own address (127.0.0.1) or another non-public one.
FORMS = [
    "127.0.0.1",
    "0.0.0.0",
    "0",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.10",
    "100.64.0.1",
    "169.254.169.254",
    "[::1]",
    "[::]",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "[::ffff:169.254.169.254]",
    "[64:ff9b::7f00:1]",
    "[2002:7f00:1::1]",
    "[fe80::1]",
    "[fd00:ec2::254]",
    "2130706433",
    "017700000001",
    "0x7f000001",
    "0177.0.0.1",
    "0x7f.0.0.1",
    "0x7f.0x0.0x0.0x1",
    "127.1",
    "127.0.1",
    "0x7f.1",
    "localhost",
    "intranet.example",
    "metadata.example",
    "loop.example",
    "loop6.example",
    "mapped.example",
    "mixed.example",
]


def egress(port: int, allow: str = "", resolver: object = None, **kw: object) -> HttpEgress:
    table = StaticResolver(NAMES)
    real = SystemResolver()

    class Both:  # "localhost" through the real resolver (/etc/hosts), the rest from the table
        async def resolve(self, host: str, p: int) -> list[str]:
            return await (real if host == "localhost" else table).resolve(host, p)

    return HttpEgress(
        EgressPolicy(parse_networks(allow), [port]),
        resolver or Both(),  # type: ignore[arg-type]
        HostLimiter(kw.pop("per_host", 4), kw.pop("overall", 16)),  # type: ignore[arg-type]
        deadline_s=kw.pop("deadline_s", 5.0),  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


async def test_ssrf_matrix_every_form_denied_zero_connections() -> None:
    async with listening() as listener:
        client = egress(listener.port)
        for form in FORMS:
            url = f"http://{form}:{listener.port}/hook"
            with pytest.raises(NetError) as refused:
                await client.admit(url)
            assert refused.value.code is ErrorCode.ADDRESS_NOT_ALLOWED, form
            with pytest.raises(NetError):
                await client.post(url, b"{}", {"Content-Type": "application/json"})
        assert listener.accepted == 0
    print(
        f"\nssrf matrix: {len(FORMS)} forms denied at check and at request, {listener.accepted} connections"
    )


async def test_legacy_ipv4_spellings_are_the_address_they_mean() -> None:
    for form in ("2130706433", "017700000001", "0x7f000001", "0177.0.0.1", "0x7f.1", "127.1", "127.0.0.1."):
        assert parse_target(f"http://{form}/").host == "127.0.0.1", form
    assert parse_target("http://[::ffff:127.0.0.1]/").host == "::ffff:7f00:1"
    for bad in ("http://1.2.3.256/", "http://08.0.0.1/", "http://1.2.3.4.5/", "gopher://x/", "http://u:p@x/"):
        with pytest.raises(UrlRefused):
            parse_target(bad)


async def test_redirect_to_an_internal_address_is_not_followed() -> None:
    async with listening() as inside:
        async with listening(
            "127.0.0.2", "redirect", redirect_to=f"http://127.0.0.1:{inside.port}/"
        ) as outside:
            client = egress(outside.port, allow="127.0.0.2/32")
            reply = await client.post(f"http://127.0.0.2:{outside.port}/hook", b"{}", {})
            assert reply.status == 302 and outside.accepted == 1
            with pytest.raises(NetError):  # and the redirect target itself is denied
                await client.post(f"http://127.0.0.1:{outside.port}/hook", b"{}", {})
        assert inside.accepted == 0


class Rebinding:
    """Answers the allowed address once, then an internal one: a second lookup would be caught."""

    def __init__(self) -> None:
        self.calls = 0

    async def resolve(self, host: str, port: int) -> list[str]:
        self.calls += 1
        return ["127.0.0.1"] if self.calls == 1 else ["127.0.0.3"]


async def test_one_lookup_and_the_checked_address_with_the_names_host_header() -> None:
    async with listening() as listener, listening("127.0.0.3") as rebound:
        resolver = Rebinding()
        client = egress(listener.port, allow="127.0.0.1/32", resolver=resolver)
        reply = await client.post(f"http://hooks.example:{listener.port}/hook", b"{}", {})
        assert reply.status == 204 and reply.address == "127.0.0.1"
        assert resolver.calls == 1 and listener.hosts == [f"hooks.example:{listener.port}"]
        assert rebound.accepted == 0


async def test_tls_sni_and_certificate_checked_against_the_name(certs: TestCertificates) -> None:
    async with listening(tls=certs.server_context()) as listener:
        client = egress(
            listener.port,
            allow="127.0.0.1/32",
            resolver=StaticResolver({"mail.test": ["127.0.0.1"]}),
            ssl_context=certs.client_context(),
        )
        reply = await client.post(f"https://mail.test:{listener.port}/hook", b"{}", {})
        assert reply.status == 204
        assert listener.server_names == ["mail.test"]
        # The same address under a name the certificate does not carry: refused in the handshake.
        other = egress(
            listener.port,
            allow="127.0.0.1/32",
            resolver=StaticResolver({"other.test": ["127.0.0.1"]}),
            ssl_context=certs.client_context(),
        )
        with pytest.raises(NetError):
            await other.post(f"https://other.test:{listener.port}/hook", b"{}", {})


async def test_deadline_covers_the_whole_exchange() -> None:
    async with listening(mode="hang") as listener:
        client = egress(listener.port, allow="127.0.0.1/32", deadline_s=0.5)
        started = time.monotonic()
        with pytest.raises(NetError) as late:
            await client.post(f"http://127.0.0.1:{listener.port}/hook", b"{}", {})
        assert late.value.code is ErrorCode.STEP_TIMEOUT
        assert time.monotonic() - started < 2.0


async def test_response_body_read_is_capped() -> None:
    async with listening(mode="big") as listener:
        client = egress(listener.port, allow="127.0.0.1/32", max_response_bytes=4096)
        reply = await client.post(f"http://127.0.0.1:{listener.port}/hook", b"{}", {})
        assert reply.status == 200 and reply.truncated and len(reply.body) == 4096


async def test_concurrency_bounded_per_host_and_overall() -> None:
    async with listening(mode="hold") as one, listening("127.0.0.2", "hold") as two:
        client = HttpEgress(
            EgressPolicy(parse_networks("127.0.0.0/8"), [one.port, two.port]),
            StaticResolver({}),
            HostLimiter(per_host=2, overall=3),
            deadline_s=10.0,
        )
        calls = [
            *(client.post(f"http://127.0.0.1:{one.port}/", b"", {}) for _ in range(5)),
            *(client.post(f"http://127.0.0.2:{two.port}/", b"", {}) for _ in range(5)),
        ]
        running = asyncio.gather(*calls)

        async def three_held() -> bool:
            return one.in_flight + two.in_flight == 3

        await eventually(three_held, "three requests held by the receivers")
        await asyncio.sleep(0.3)  # room for a fourth, which must not come
        assert one.in_flight <= 2 and two.in_flight <= 2 and one.in_flight + two.in_flight == 3
        one.release.set()
        two.release.set()
        replies = await running
        assert [r.status for r in replies] == [204] * 10
        assert one.most_in_flight == 2 and two.most_in_flight <= 2
        assert client.limiter.busy_hosts() == 0
