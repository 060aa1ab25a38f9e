"""The port allow-list is checked on save (with a suggestion), and the ACT rule for IMAP/POP3 profiles."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from profile_svc_helpers import Recorder, outbox_drained, profile_body


def _errors(r: httpx.Response) -> dict[str, str]:
    return {e["field"]: e["message"] for e in r.json()["errors"]}


@pytest.mark.integration
async def test_port_policy_refuses_with_the_allowed_alternative(
    client: httpx.AsyncClient, db: Any, events: Recorder
) -> None:
    r = await client.put("/settings", json={"port_preset": "government_cloud"})
    assert r.status_code == 200, r.text
    assert sorted(r.json()["allowed_ports"]) == [80, 443, 465, 587, 993]

    imap_starttls = profile_body(incoming={"host": "imap.example.com", "port": 143, "tls": "starttls"})
    r = await client.post("/profiles", json=imap_starttls)
    assert r.status_code == 422
    errors = _errors(r)
    assert "143" in errors["incoming.port"] and "IMAPS (implicit TLS) on 993" in errors["incoming.port"]
    # use-same-settings gives SMTP with STARTTLS on 587, which is allowed
    assert "outgoing.port" not in errors

    pop3 = profile_body(incoming_protocol="pop3", incoming={"host": "pop.example.com", "port": 995})
    r = await client.post("/profiles", json=pop3)
    assert r.status_code == 422
    assert "995" in _errors(r)["incoming.port"] and "no standard POP3 port" in _errors(r)["incoming.port"]

    smtp25 = profile_body(
        use_same_settings_for_outgoing=False,
        outgoing={"host": "smtp.example.com", "port": 25, "tls": "starttls"},
    )
    r = await client.post("/profiles", json=smtp25)
    assert r.status_code == 422
    assert "25" in _errors(r)["outgoing.port"] and "587" in _errors(r)["outgoing.port"]

    assert (await client.get("/profiles")).json()["total"] == 0

    r = await client.put("/settings", json={"port_preset": "custom", "allowed_ports": [995, 465]})
    assert r.status_code == 200, r.text
    r = await client.post(
        "/profiles",
        json=profile_body(
            incoming_protocol="pop3", incoming={"host": "pop.example.com", "port": 110, "tls": "starttls"}
        ),
    )
    assert r.status_code == 422 and "POP3S (implicit TLS) on 995" in _errors(r)["incoming.port"]
    ok = await client.post(
        "/profiles", json=profile_body(incoming_protocol="pop3", incoming={"host": "pop.example.com"})
    )
    assert ok.status_code == 201, ok.text
    assert ok.json()["incoming"]["port"] == 995 and ok.json()["outgoing"]["port"] == 465

    # Narrowing the allow-list under a saved profile is refused, naming the profile; nothing changes.
    await outbox_drained(db)
    settings_events = len(events.of("EmailSettingsChanged"))
    before = (await client.get("/settings")).json()
    r = await client.put("/settings", json={"port_preset": "government_cloud"})
    assert r.status_code == 409
    message = _errors(r)["allowed_ports"]
    assert "1 profile" in message and "Contoso IMAP" in message and "995" in message
    assert (await client.get("/settings")).json() == before
    r = await client.put("/settings", json={"port_preset": "custom"})
    assert r.status_code == 422 and "allowed_ports" in _errors(r)
    r = await client.put("/settings", json={"port_preset": "default", "allowed_ports": [993]})
    assert r.status_code == 422 and "allowed_ports" in _errors(r)
    r = await client.put("/settings", json={"port_preset": "custom", "allowed_ports": [0]})
    assert r.status_code == 422 and "allowed_ports.0" in _errors(r)
    await outbox_drained(db)
    assert len(events.of("EmailSettingsChanged")) == settings_events


@pytest.mark.integration
async def test_act_server_side_sync_is_refused_for_imap_pop3_default(client: httpx.AsyncClient) -> None:
    r = await client.post("/profiles", json=profile_body(is_default=True))
    pid = r.json()["profile_id"]
    r = await client.put("/settings", json={"default_profile_id": pid, "act_delivery": "server_side_sync"})
    assert r.status_code == 422
    assert "not supported for IMAP/POP profiles" in _errors(r)["act_delivery"]
    assert (await client.get("/settings")).json()["act_delivery"] == "none"
    assert (
        await client.put("/settings", json={"default_profile_id": pid, "act_delivery": "email_router"})
    ).status_code == 200

    # With no default profile ACT may be server-side sync, but then no IMAP/POP3 profile may become the default.
    r = await client.put("/settings", json={"act_delivery": "server_side_sync"})
    assert r.status_code == 200, r.text
    r = await client.patch(f"/profiles/{pid}", json={"is_default": True})
    assert r.status_code == 422 and "is_default" in _errors(r)
    r = await client.post("/profiles", json=profile_body("Other", is_default=True))
    assert r.status_code == 422 and "is_default" in _errors(r)
    assert (await client.get("/settings")).json()["default_profile_id"] is None

    bad = {
        "incoming_delivery": "carrier_pigeon",
        "alert_levels": ["error", "panic"],
        "approved_users_only": "perhaps",
    }
    r = await client.put("/settings", json=bad)
    assert r.status_code == 422
    assert {"incoming_delivery", "alert_levels.1", "approved_users_only"} <= set(_errors(r))
