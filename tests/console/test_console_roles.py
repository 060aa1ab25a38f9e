"""What a user sees and may press follows their role, in Chromium, against the real services.

Each role signs in (API tokens, and a mailbox owner through the local OpenID Connect provider):
the buttons their role may not press are not there, and a form posted anyway (with the session's
own CSRF token, as a user crafting it would) gets the service's real 403, shown as such. The
hiding is the console's courtesy; the refusal is the service's.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest
from playwright.async_api import Page, expect

from mailwarden_runtime.auth import Role

from .test_console_flow import unlabeled

pytestmark = pytest.mark.integration

VIEWPORT = {"width": 1366, "height": 860}
ConsoleStack = Any  # tests/console/conftest.py
WRITE_BUTTONS = (
    "Apply Default Email Settings",
    "Edit (change multiple records)",
    "Approve Email",
    "Reject Email",
    "Test & Enable Mailboxes",
)


async def new_page(console: ConsoleStack) -> Page:
    context = await console.browser.new_context(viewport=VIEWPORT)  # type: ignore[attr-defined]
    page: Page = await context.new_page()
    return page


async def sign_in_with_token(console: ConsoleStack, page: Page, token: str, path: str = "/") -> None:
    await page.goto(f"{console.url}{path}")
    await expect(page).to_have_url(re.compile(r"/signin"))
    await page.get_by_label("API token").fill(token)
    await page.get_by_role("button", name="Sign in", exact=True).click()
    await expect(page).not_to_have_url(re.compile(r"/signin"))


async def seed(console: ConsoleStack, tag: str, owner: str) -> tuple[str, str, str]:
    """A profile and two mailboxes through the public APIs: one of ``owner``, one of someone else."""
    auth = {"Authorization": f"Bearer {console.token}"}
    async with (
        httpx.AsyncClient(base_url=console.services["profile"], headers=auth) as profiles,
        httpx.AsyncClient(base_url=console.services["mailbox"], headers=auth) as mailboxes,
    ):
        settings = (await profiles.get("/settings")).json()
        ports = sorted({*settings["allowed_ports"], console.dovecot.imaps_port, console.smtp.port_starttls})
        body = {k: settings[k] for k in ("default_profile_id", "alert_levels")}
        body |= {"port_preset": "custom", "allowed_ports": ports}
        assert (await profiles.put("/settings", json=body)).status_code == 200
        resp = await profiles.post(
            "/profiles",
            json={
                "name": f"Roles {tag}",
                "owner": {"kind": "user", "id": f"padm{tag}", "name": "Profile admin"},
                "incoming_protocol": "imap",
                "incoming": {"host": "127.0.0.1", "port": console.dovecot.imaps_port, "tls": "implicit"},
                "use_same_settings_for_outgoing": False,
                "outgoing": {"host": "127.0.0.1", "port": console.smtp.port_starttls, "tls": "starttls"},
            },
        )
        assert resp.status_code == 201, resp.text
        profile_id = resp.json()["profile_id"]
        batch = [
            {
                "mailbox_id": f"{who}{tag}",
                "email": f"{who}{tag}@mail.test",
                "owner": {"kind": "user", "id": who_id, "name": who.capitalize()},
                "profile_id": profile_id,
            }
            for who, who_id in (("own", owner), ("other", f"someone{tag}"))
        ]
        resp = await mailboxes.post("/mailboxes/batch", json={"mailboxes": batch})
        assert resp.status_code == 201, resp.text
    return profile_id, f"own{tag}", f"other{tag}"


async def forged(console: ConsoleStack, page: Page, path: str, form: dict[str, str], expected: str) -> None:
    """Post a form the page did not offer, with the session's CSRF token read from a page (as a
    user crafting it would); the page it lands on shows the service's 403."""
    await page.goto(f"{console.url}/mailboxes")
    csrf = await page.locator("input[name=csrf]").first.get_attribute("value") or ""
    resp = await page.request.post(f"{console.url}{path}", form={"csrf": csrf, **form})
    assert resp.ok, resp.status
    await page.goto(resp.url)
    notice = page.get_by_role("status")
    await expect(notice).to_contain_text(expected)
    await expect(notice).to_contain_text(
        re.compile(r"\((mailbox|profile|alert|sync)-svc answered 403: needs ")
    )


async def test_an_approver_sees_approve_and_nothing_else_to_press(console: ConsoleStack) -> None:
    tag = uuid.uuid4().hex[:6]
    profile_id, own, _ = await seed(console, tag, f"nobody{tag}")
    page = await new_page(console)
    await sign_in_with_token(console, page, await console.token_for(f"appr{tag}", Role.APPROVER))
    await expect(page).to_have_url(re.compile(r"/mailboxes$"))
    nav = page.get_by_role("navigation", name="Main")
    await expect(nav.get_by_role("link")).to_have_text(["Mailboxes", "Error catalog"])
    await expect(page.locator("header .who")).to_contain_text(f"appr{tag} (approver)")

    await page.goto(f"{console.url}/mailboxes?profile_id={profile_id}")
    await expect(page.get_by_role("button", name="Approve Email")).to_be_visible()
    await expect(page.get_by_role("button", name="Reject Email")).to_be_visible()
    for name in ("Apply Default Email Settings", "Edit (change multiple records)", "Test & Enable Mailboxes"):
        await expect(page.get_by_role("button", name=name)).to_have_count(0)
    await expect(page.get_by_role("link", name="Add a mailbox")).to_have_count(0)
    await console.shot(page, "mailboxes-approver")

    # What the role may do works.
    await page.get_by_label(f"Select {own}@mail.test").check()
    await page.get_by_role("button", name="Approve Email").click()
    await expect(page.get_by_role("status")).to_have_text("Email approved for 1 mailbox.")

    # The mailbox page: no Test & Enable, no credentials form.
    await page.goto(f"{console.url}/mailboxes/{own}")
    await expect(page.get_by_role("heading", name=f"{own}@mail.test")).to_be_visible()
    await expect(page.get_by_role("button", name="Test & Enable")).to_have_count(0)
    await expect(page.get_by_role("heading", name="Credentials")).to_have_count(0)

    # What it may not do, posted anyway: the service says no, and the page says so.
    await page.goto(f"{console.url}/mailboxes")
    await forged(
        console,
        page,
        "/mailboxes/actions",
        {"action": "test", "mailbox_ids": own},
        "You may not test and enable mailboxes.",
    )
    await forged(console, page, f"/mailboxes/{own}/test", {}, "You may not test and enable this mailbox.")
    await forged(
        console, page, f"/profiles/{profile_id}/delete", {}, "You may not delete email server profiles."
    )


async def test_an_auditor_reads_everything_and_presses_nothing(console: ConsoleStack) -> None:
    tag = uuid.uuid4().hex[:6]
    profile_id, own, _ = await seed(console, tag, f"nobody{tag}")
    page = await new_page(console)
    await sign_in_with_token(console, page, await console.token_for(f"aud{tag}", Role.AUDITOR))
    await page.goto(f"{console.url}/mailboxes?profile_id={profile_id}")
    await expect(page.locator("#mailbox-rows tbody tr")).to_have_count(2)
    for name in WRITE_BUTTONS:
        await expect(page.get_by_role("button", name=name)).to_have_count(0)
    await expect(page.get_by_role("checkbox")).to_have_count(0)

    await page.goto(f"{console.url}/mailboxes/{own}")
    await expect(page.get_by_role("heading", name="Credentials")).to_have_count(0)
    await expect(page.locator("input[type=password]")).to_have_count(0)
    await expect(page.get_by_role("button", name="Test & Enable")).to_have_count(0)
    await expect(page.get_by_role("heading", name="Sync")).to_be_visible()  # auditors read sync state
    await expect(page.get_by_role("button", name=re.compile("sync", re.I))).to_have_count(0)

    await page.goto(f"{console.url}/settings")
    await expect(page.locator("#read-only")).to_be_visible()
    await expect(page.get_by_role("button", name="Save settings")).to_have_count(0)
    await expect(page.get_by_label("Allowed ports")).to_be_disabled()
    assert await unlabeled(page) == []
    await console.shot(page, "settings-auditor")

    await page.goto(f"{console.url}/profiles?q=Roles+{tag}")
    await expect(page.get_by_role("link", name=f"Roles {tag}", exact=True)).to_be_visible()
    await expect(page.get_by_role("link", name="New profile")).to_have_count(0)
    await expect(page.get_by_role("link", name=f"Delete Roles {tag}")).to_have_count(0)
    await expect(page.get_by_role("button", name=re.compile("^Test and enable"))).to_have_count(0)
    await page.get_by_role("link", name=f"Roles {tag}", exact=True).click()
    await expect(page.get_by_role("button", name="Save")).to_have_count(0)
    await expect(page.locator("input[type=password]")).to_have_count(0)

    await page.goto(f"{console.url}/jobs")
    await expect(page.get_by_role("alert")).to_contain_text("You may not see jobs.")

    await forged(
        console,
        page,
        f"/mailboxes/{own}/credentials",
        {"username": "x", "password": "forged-pw"},
        "You may not change this mailbox.",
    )
    await forged(console, page, f"/profiles/{profile_id}/test", {}, "You may not run Test & Enable jobs.")


async def test_a_mailbox_owner_signs_in_with_oidc_and_lands_on_their_own_wall(console: ConsoleStack) -> None:
    tag = uuid.uuid4().hex[:6]
    olga = f"olga{tag}"
    _, own, other = await seed(console, tag, olga)
    console.idp.users[olga] = {"mailwarden_roles": ["mailbox_owner"]}
    page = await new_page(console)
    await page.goto(f"{console.url}/")
    await expect(page).to_have_url(re.compile(r"/signin"))
    await page.get_by_role("link", name="Sign in with Local IdP").click()
    await expect(page.get_by_role("heading", name="Local identity provider")).to_be_visible()
    await page.get_by_label("User").select_option(olga)
    await page.get_by_role("button", name="Continue").click()

    await expect(page).to_have_url(re.compile(rf"/alerts\?recipient_kind=user&recipient_id={olga}$"))
    await expect(page.get_by_role("heading", level=1)).to_have_text(f"Alerts: user:{olga}")
    await expect(page.locator("header .who")).to_contain_text(f"{olga} (mailbox owner) · oidc")
    nav = page.get_by_role("navigation", name="Main")
    await expect(nav.get_by_role("link")).to_have_text(["My mailboxes", "My alerts", "Error catalog"])
    cookies = {c["name"]: c for c in await page.context.cookies()}
    assert cookies["mw_console"]["httpOnly"] and cookies["mw_console"]["sameSite"] == "Strict"
    assert "mw_console_oidc" not in cookies, "the sign-in's flow cookie is gone once used"
    await console.shot(page, "alerts-owner")

    # Live: the owner tests their own mailbox (approved, no login yet) from another tab, and the
    # failure's alert arrives on the open wall without a reload.
    await expect(page.locator("body[data-live-state=open]")).to_have_count(1)
    auth = {"Authorization": f"Bearer {console.token}"}
    async with httpx.AsyncClient(base_url=console.services["mailbox"], headers=auth) as api:
        resp = await api.post("/mailboxes/approve", json={"mailbox_ids": [own]})
        assert resp.status_code == 200 and resp.json()["done"], resp.text
    tab = await page.context.new_page()
    await tab.goto(f"{console.url}/mailboxes/{own}")
    await tab.get_by_role("button", name="Test & Enable").click()
    await expect(tab.get_by_role("status")).to_contain_text("Test & Enable started")
    await tab.close()
    await expect(page.locator("article.alert").first).to_be_visible(timeout=45_000)
    await expect(page.locator("article.alert").first).to_contain_text(f"user:{olga}")
    await expect(page.get_by_role("button", name="Mark read").first).to_be_visible()

    await nav.get_by_role("link", name="My mailboxes").click()
    rows = page.locator("#mailbox-rows tbody tr")
    await expect(rows).to_have_count(1)
    await expect(rows).to_contain_text(f"{own}@mail.test")
    await page.get_by_role("link", name=f"{own}@mail.test").click()
    await expect(page.get_by_role("button", name="Test & Enable")).to_be_visible()
    assert await unlabeled(page) == []
    await page.keyboard.press("Tab")  # the first stop is the skip link
    assert await page.evaluate("document.activeElement.textContent") == "Skip to content"
    await expect(page.get_by_role("heading", name="Credentials")).to_be_visible()
    # Their own mailbox's sync state is theirs to read, not to pause: no sync actions.
    await expect(page.get_by_role("heading", name="Sync")).to_be_visible()
    await expect(page.locator("#sync-state")).to_be_visible()
    await expect(page.get_by_role("group", name="Sync actions")).to_have_count(0)

    # Someone else's mailbox: the service refuses, and the page says who refused.
    resp = await page.goto(f"{console.url}/mailboxes/{other}")
    assert resp is not None and resp.status == 403
    await expect(page.get_by_role("alert")).to_contain_text("You may not see this mailbox.")
    await page.goto(f"{console.url}/mailboxes/{own}")
    await forged(
        console,
        page,
        "/mailboxes/actions",
        {"action": "approve", "mailbox_ids": own},
        "You may not approve email of mailboxes.",
    )

    logouts = len(console.idp.logouts)
    await page.get_by_role("button", name="Sign out").click()
    await expect(page).to_have_url(re.compile(r"/signin$"))
    assert len(console.idp.logouts) == logouts + 1, "the provider's session ends too"
    await page.goto(f"{console.url}/mailboxes/{own}")
    await expect(page).to_have_url(re.compile(r"/signin\?next="))


async def test_an_oidc_answer_that_is_not_for_this_sign_in_is_refused(console: ConsoleStack) -> None:
    page = await new_page(console)
    # No sign-in was started in this browser: a code alone is not enough.
    resp = await page.goto(f"{console.url}/signin/oidc/callback?code=abc&state=xyz")
    assert resp is not None and resp.status == 401
    await expect(page.get_by_role("alert")).to_contain_text("started too long ago or in another browser")

    # Started here, but the answer carries another state: refused before the code is exchanged.
    requests_before = console.idp.token_requests
    start = await page.request.get(f"{console.url}/signin/oidc?next=/errors", max_redirects=0)
    assert start.status == 303
    where = start.headers["location"]
    assert where.startswith(f"{console.idp.issuer}/authorize?") and "code_challenge_method=S256" in where
    resp = await page.goto(f"{console.url}/signin/oidc/callback?code=abc&state=forged")
    assert resp is not None and resp.status == 401
    await expect(page.get_by_role("alert")).to_contain_text("not for this sign-in")
    assert console.idp.token_requests == requests_before

    # The provider says no (the user cancelled): its reason is shown.
    start = await page.request.get(f"{console.url}/signin/oidc", max_redirects=0)
    state = re.search(r"state=([^&]+)", start.headers["location"])
    assert state is not None
    resp = await page.goto(
        f"{console.url}/signin/oidc/callback?error=access_denied&error_description=cancelled&state={state[1]}"
    )
    assert resp is not None and resp.status == 401
    await expect(page.get_by_role("alert")).to_contain_text("refused the sign-in: cancelled")


async def oidc_sign_in(console: ConsoleStack, page: Page, user: str) -> None:
    await page.goto(f"{console.url}/signin?next=/errors")
    await page.get_by_role("link", name="Sign in with Local IdP").click()
    await page.get_by_label("User").select_option(user)
    await page.get_by_role("button", name="Continue").click()


async def test_an_id_token_that_does_not_verify_signs_nobody_in(console: ConsoleStack) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    idp = console.idp
    user = f"eve{uuid.uuid4().hex[:6]}"
    idp.users[user] = {"mailwarden_roles": ["system_admin"]}
    page = await new_page(console)
    cases: list[tuple[str, dict[str, Any], Any, str]] = [
        ("nonce", {"nonce": "replayed"}, None, "not for this sign-in (nonce)"),
        ("audience", {"aud": "another-client"}, None, "the ID token does not verify"),
        ("issuer", {"iss": "https://idp.example.org"}, None, "the ID token does not verify"),
        ("expired", {"exp": 1_000_000_000}, None, "the ID token does not verify"),
        ("key", {}, rsa.generate_private_key(public_exponent=65537, key_size=2048), "does not verify"),
    ]
    try:
        for label, changes, key, message in cases:
            idp.id_token_changes, idp.id_token_key = changes, key
            await oidc_sign_in(console, page, user)
            await expect(page.get_by_role("alert")).to_contain_text(message)
            assert not any(c["name"] == "mw_console" for c in await page.context.cookies()), label
        # Signed and for us, but an access token the services refuse (meant for another API).
        idp.id_token_changes, idp.id_token_key, idp.access_audience = {}, None, "another-api"
        await oidc_sign_in(console, page, user)
        await expect(page.get_by_role("alert")).to_contain_text("identity provider's token was not accepted")
    finally:
        idp.id_token_changes, idp.id_token_key, idp.access_audience = {}, None, None
    # A token too large for a cookie (browsers drop those silently): said, not a silent loop.
    idp.users[f"{user}-big"] = {
        "mailwarden_roles": ["integration"],
        "mailwarden_mailboxes": [f"mbx-{i:05d}-{'x' * 12}" for i in range(200)],
    }
    await oidc_sign_in(console, page, f"{user}-big")
    await expect(page.get_by_role("alert")).to_contain_text("too large")
    assert not any(c["name"] == "mw_console" for c in await page.context.cookies())
    # All well: signed in, back where the sign-in was asked.
    await oidc_sign_in(console, page, user)
    await expect(page).to_have_url(re.compile(r"/errors$"))
    await expect(page.locator("header .who")).to_contain_text(f"{user} (system admin) · oidc")


async def test_the_session_ends_with_the_providers_access_token(console: ConsoleStack) -> None:
    idp = console.idp
    user = f"kim{uuid.uuid4().hex[:6]}"
    idp.users[user] = {"mailwarden_roles": ["auditor"]}
    idp.access_ttl_s = 3
    try:
        page = await new_page(console)
        await oidc_sign_in(console, page, user)
        await expect(page).to_have_url(re.compile(r"/errors$"))
    finally:
        idp.access_ttl_s = 600
    await page.wait_for_timeout(3_500)
    await page.goto(f"{console.url}/mailboxes")
    await expect(page).to_have_url(re.compile(r"/signin\?next=/mailboxes"))
