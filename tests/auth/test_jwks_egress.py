"""The identity provider's JWKS is fetched through the one egress policy, against a real listener.

A provider on a non-public address is refused before any connection (the listener counts the TCP
connections it accepts: zero), whatever way the URL spells the address, until the operator allows
its range in ``MW_AUTH_JWKS_ALLOW_NETWORKS``; then the same provider works. IPv4 hidden in IPv6 is
refused even then, as for every outbound connection.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mailwarden_runtime.auth import AuthSettings
from mailwarden_runtime.auth.errors import AuthUnavailable
from mailwarden_runtime.auth.oidc import OidcVerifier

from .auth_helpers import AUDIENCE, ISSUER, IdentityProvider, identity_provider


@pytest.fixture
def idp() -> Iterator[IdentityProvider]:
    with identity_provider() as provider:
        yield provider


def _verifier(url: str, allow: str = "") -> OidcVerifier:
    settings = AuthSettings.model_validate(
        {
            "oidc_issuer": ISSUER,
            "oidc_audience": AUDIENCE,
            "oidc_jwks_url": url,
            "jwks_allow_networks": allow,
            "jwks_timeout_s": 2,
        }
    )
    return OidcVerifier(settings)


def _denied_urls(port: int) -> dict[str, str]:
    return {
        "loopback": f"http://127.0.0.1:{port}/jwks.json",
        "a name for loopback": f"http://localhost:{port}/jwks.json",
        "decimal": f"http://2130706433:{port}/jwks.json",
        "hex, short": f"http://0x7f.1:{port}/jwks.json",
        "octal": f"http://0177.0.0.1:{port}/jwks.json",
        "IPv4-mapped IPv6": f"http://[::ffff:127.0.0.1]:{port}/jwks.json",
    }


async def test_a_provider_on_a_denied_address_is_refused_with_zero_connections(
    idp: IdentityProvider, caplog: pytest.LogCaptureFixture
) -> None:
    token = idp.token()
    refused: list[str] = []
    for name, url in _denied_urls(idp.port).items():
        verifier = _verifier(url)
        try:
            with pytest.raises(AuthUnavailable):
                await verifier.verify(token)
            refused.append(name)
        finally:
            await verifier.close()
    assert refused == list(_denied_urls(idp.port))
    assert idp.connections == 0
    assert idp.requests == 0
    assert "MW_AUTH_JWKS_ALLOW_NETWORKS" in caplog.text  # the operator is told how to allow it


async def test_the_allowed_provider_works_and_hidden_ipv4_stays_refused(idp: IdentityProvider) -> None:
    allowed = _verifier(idp.url, allow="127.0.0.0/8")
    try:
        principal = await allowed.verify(idp.token(sub="alice"))
    finally:
        await allowed.close()
    assert principal.subject == "alice"
    assert idp.connections >= 1
    assert idp.requests == 1

    before = idp.connections
    for url, allow in (
        (f"http://[::ffff:127.0.0.1]:{idp.port}/jwks.json", "127.0.0.0/8"),  # judged strictly
        (idp.url, "10.0.0.0/8"),  # another range allowed, not this one
    ):
        verifier = _verifier(url, allow)
        try:
            with pytest.raises(AuthUnavailable):
                await verifier.verify(idp.token())
        finally:
            await verifier.close()
    assert idp.connections == before


def test_the_allow_list_and_the_url_are_checked_when_settings_load() -> None:
    with pytest.raises(ValueError, match="not a network"):
        AuthSettings.model_validate({"jwks_allow_networks": "127.0.0.0/8, intranet"})
    for url in ("file:///etc/passwd", "ftp://idp.example/jwks", "http://user:pw@idp.example/jwks"):
        with pytest.raises(ValueError, match="oidc_jwks_url"):
            AuthSettings.model_validate({"oidc_jwks_url": url})
