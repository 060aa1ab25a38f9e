"""The seed's flow through the console, in Chromium: settings, a profile, mailboxes, defaults,
approval, Test & Enable with live progress, the trace, both owners' walls, and a wrong password
that disables a mailbox. Each step checks what the page shows, as an administrator reads it."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest
from playwright.async_api import Page, expect

pytestmark = pytest.mark.integration

WAIT_MS = 45_000
VIEWPORT = {"width": 1366, "height": 860}  # a laptop screen
ConsoleStack = Any  # tests/console/conftest.py


SCRIPT_ERRORS: list[str] = []  # every page's script and Content-Security-Policy errors


async def new_page(console: ConsoleStack) -> Page:
    context = await console.browser.new_context(viewport=VIEWPORT)  # type: ignore[attr-defined]
    page: Page = await context.new_page()
    page.on("console", lambda m: SCRIPT_ERRORS.append(m.text) if _unexpected(m.type, m.text) else None)
    page.on("pageerror", lambda e: SCRIPT_ERRORS.append(str(e)))
    return page


def _unexpected(kind: str, text: str) -> bool:
    """An error in the browser's console, except a refused form's own status (shown on the page)."""
    refused = re.search(r"status of (400|401|403|409|422) ", text) is not None
    return kind == "error" and not refused


async def sign_in(console: ConsoleStack, page: Page, next_path: str = "/mailboxes") -> None:
    await page.goto(f"{console.url}{next_path}")
    await expect(page).to_have_url(re.compile(r"/signin"))
    await console.shot(page, "signin")
    await page.get_by_label("API token").fill(console.token)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(re.compile(re.escape(next_path.split("?")[0])))


async def unlabeled(page: Page) -> list[str]:
    """The page's visible form controls without a label (none may be)."""
    found: list[str] = await page.evaluate(
        """() => [...document.querySelectorAll('input, select, textarea')]
            .filter(el => el.type !== 'hidden')
            .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
            .map(el => el.name || el.id)"""
    )
    return found


async def until_notice(page: Page, submit: Any, pattern: str, tries: int = 40) -> None:
    """Submit until the notice matches (the services learn of each other's changes from events)."""
    notice = page.get_by_role("status")
    for _ in range(tries):
        await submit()
        await page.wait_for_load_state()
        text = await notice.text_content() if await notice.count() else ""
        if re.search(pattern, text or ""):
            return
        await page.wait_for_timeout(250)
    raise AssertionError(f"never saw {pattern!r}; last notice: {text!r}")


async def test_seed_flow_through_the_console(console: ConsoleStack) -> None:
    tag = uuid.uuid4().hex[:6]
    admin, good, bad = f"padmin{tag}", f"ann{tag}", f"ben{tag}"
    page = await new_page(console)
    await sign_in(console, page, "/settings")
    cookies = await page.context.cookies()
    session = next(c for c in cookies if c["name"] == "mw_console")
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    assert console.token not in await page.content() and console.token[-12:] not in session["value"]

    # Org settings: the tester may use the local test servers' ports.
    ports = [console.dovecot.imaps_port, console.smtp.port_starttls]
    await page.get_by_label("Allowed ports").select_option("custom")
    await page.get_by_label("Custom list").fill("70000")
    await page.get_by_role("button", name="Save settings").click()
    await expect(page.locator("#f-allowed_ports ~ .field-error")).to_be_visible()  # the service's message
    await page.get_by_label("Allowed ports").select_option("custom")
    await page.get_by_label("Custom list").fill(", ".join(map(str, ports)))
    await page.get_by_label("Re-test mailboxes no sync watches every (seconds)").fill("3600")
    await page.get_by_role("button", name="Save settings").click()
    await expect(page.get_by_role("status")).to_have_text("Email settings saved.")
    await expect(page.get_by_label("Re-test mailboxes no sync watches every (seconds)")).to_have_value("3600")
    await console.shot(page, "settings")

    # A profile: first with a port the organisation does not allow, so the service's suggestion shows.
    await page.goto(f"{console.url}/profiles/new")
    await page.get_by_label("Name", exact=True).fill(f"Local IMAP {tag}")
    await page.get_by_label("Owner id").fill(admin)
    await page.get_by_label("Owner name").fill("Profile Admin")
    await page.get_by_label("Owner email").fill(f"{admin}@example.org")
    await page.locator("#f-incoming-host").fill("127.0.0.1")
    await page.locator("#f-incoming-port").fill("143")
    await page.locator("#f-outgoing-host").fill("127.0.0.1")
    await page.locator("#f-outgoing-port").fill(str(console.smtp.port_starttls))
    await page.get_by_label("Default profile for new mailboxes").check()
    await page.get_by_role("button", name="Create profile").click()
    port_error = page.locator("#f-incoming-port-err")
    await expect(port_error).to_contain_text("not in the organisation's allowed ports")
    await console.shot(page, "profile-form")
    await page.locator("#f-incoming-port").fill(str(console.dovecot.imaps_port))
    await page.get_by_role("button", name="Create profile").click()
    await expect(page.get_by_role("status")).to_contain_text(f"Profile Local IMAP {tag} created.")
    await expect(page.get_by_role("row", name=re.compile(f"Local IMAP {tag}"))).to_contain_text("Yes")
    await console.shot(page, "profiles")

    # Appointments, contacts and tasks cannot come from an IMAP default profile: refused at the field.
    await page.goto(f"{console.url}/settings")
    await expect(page.get_by_label("Default server profile")).to_have_value(re.compile("^prf_"))
    await page.get_by_label("Appointments, contacts and tasks").select_option("server_side_sync")
    await page.get_by_role("button", name="Save settings").click()
    await expect(page.locator("#f-act_delivery-err")).to_contain_text("IMAP")
    await expect(page.locator("#f-act_delivery")).to_have_attribute("aria-invalid", "true")

    # Two mailboxes without a profile; ben's password is wrong.
    for who, user, password in ((good, "alice", "alice-pw"), (bad, "bob", "not-bobs-password")):
        await page.goto(f"{console.url}/mailboxes/new")
        await page.get_by_label("Mailbox id (optional)").fill(who)
        await page.get_by_label("Email address").fill(f"{who}@mail.test")
        await page.get_by_label("Owner id").fill(who)
        await page.get_by_label("Owner name").fill(who.capitalize())
        await page.get_by_label("User name").fill(user)
        await page.get_by_label("Password").fill(password)
        await page.get_by_role("button", name="Add mailbox").click()
        await expect(page.get_by_role("status")).to_contain_text(f"Mailbox {who}@mail.test added.")

    # Active Mailboxes: select both, approve, apply the default settings (which tests them).
    async def select_both() -> None:
        await page.goto(f"{console.url}/mailboxes?owner_kind=user")
        for who in (good, bad):
            await page.get_by_label(f"Select {who}@mail.test").check()

    await select_both()
    await page.get_by_role("button", name="Approve Email").click()
    await expect(page.get_by_role("status")).to_have_text("Email approved for 2 mailboxes.")

    # The bad owner's wall, open before the test: its alert must arrive live (no reload).
    wall = await new_page(console)
    await wall.context.add_cookies(await page.context.cookies())
    await wall.goto(f"{console.url}/alerts?recipient_kind=user&recipient_id={bad}")
    await expect(wall.locator("#wall-count")).to_have_text("0 alerts")
    await expect(wall.locator("body[data-live-state=open]")).to_have_count(1)

    async def apply_defaults() -> None:
        await select_both()
        await page.get_by_role("button", name="Apply Default Email Settings").click()

    await until_notice(page, apply_defaults, r"Default email settings applied to 2 mailboxes\.$")

    alerts = wall.locator("article.alert")
    await expect(alerts.first).to_be_visible(timeout=WAIT_MS)
    await expect(alerts.locator(".l-error")).to_have_count(await alerts.count())  # one per direction
    await expect(alerts.first).to_contain_text("auth_failed")
    await expect(alerts.first.locator(".st-raised")).to_have_count(1)
    await console.shot(wall, "alerts")
    # The alert links to its test run's trace on the mailbox's page.
    run_link = alerts.first.get_by_role("link", name=re.compile("^test run "))
    test_id = (await run_link.inner_text()).removeprefix("test run ")
    trace_page = await wall.context.new_page()
    await trace_page.goto(f"{console.url}{await run_link.get_attribute('href')}")
    await expect(trace_page.locator("#trace-h")).to_have_text(f"Test {test_id}: step by step")
    await expect(trace_page.locator("table.trace td.failed").first).to_contain_text("auth_failed")
    await trace_page.close()

    # The good mailbox's page: enabled, with its step-by-step trace.
    await page.goto(f"{console.url}/mailboxes/{good}")
    trace = page.locator("table.trace")
    await expect(trace.first).to_be_visible(timeout=WAIT_MS)
    await expect(page.locator("#status-h + dl")).to_contain_text("Success")
    await expect(trace.first.locator("caption")).to_contain_text("Incoming (IMAP)")
    await expect(trace.first).to_contain_text("tls")
    await expect(trace.first.locator("td.failed")).to_have_count(0)

    # Its sync state: sync-svc synchronizes the enabled mailbox; pause, resume and re-sync it.
    sync_state = page.locator("#sync-state")
    for _ in range(90):
        text = await sync_state.text_content() or ""
        if "Synchronizing" in text and re.search(r"Last sync\s*\d{4}-", text):
            break
        await page.wait_for_timeout(500)
        await page.reload()
    await expect(sync_state).to_contain_text("Synchronizing")
    await expect(sync_state).to_contain_text("IMAP")
    await expect(sync_state).to_contain_text(re.compile(r"Last sync\s*\d{4}-\d\d-\d\d"))
    assert await unlabeled(page) == []
    await console.shot(page, "mailbox")
    await page.get_by_role("button", name="Pause sync").click()
    await expect(page.get_by_role("status")).to_contain_text("Sync paused")
    await expect(sync_state).to_contain_text("Paused")
    await page.get_by_role("button", name="Resume sync").click()
    await expect(page.get_by_role("status")).to_have_text("Sync resumed.")
    await expect(sync_state).to_contain_text("Synchronizing")
    await page.get_by_label("Re-sync from").fill("2026-01-01")
    await page.get_by_role("button", name="Re-sync", exact=True).click()
    await expect(page.get_by_role("status")).to_contain_text("Re-sync asked")

    # The bad one: disabled, auth_failed with its remediation from the error catalog.
    await page.goto(f"{console.url}/mailboxes/{bad}")
    await expect(page.locator("#status-h + dl")).to_contain_text("auth_failed", timeout=WAIT_MS)
    await expect(
        page.get_by_text("Update the mailbox credentials, then Test & Enable again.").first
    ).to_be_visible()
    await expect(page.locator("table.trace td.failed").first).to_contain_text("auth_failed")

    # The good owner's wall has the success; the profile owner's wall has ben's error.
    await page.goto(f"{console.url}/alerts?recipient_kind=user&recipient_id={good}")
    await expect(page.locator("article.alert .l-information")).to_have_count(1, timeout=WAIT_MS)
    await page.goto(f"{console.url}/alerts?recipient_kind=user&recipient_id={admin}")
    await expect(page.locator("article.alert .l-error").first).to_be_visible(timeout=WAIT_MS)

    # The list shows it all.
    await page.goto(f"{console.url}/mailboxes?owner_kind=user")
    good_row = page.get_by_role("row", name=re.compile(f"{good}@mail.test"))
    await expect(good_row).to_contain_text("Approved")
    await expect(good_row.locator(".s-success")).to_have_count(2)
    bad_row = page.get_by_role("row", name=re.compile(f"{bad}@mail.test"))
    await expect(bad_row).to_contain_text("auth_failed")
    await console.shot(page, "mailboxes")

    # Test & Enable the whole profile as a job: live progress, then the counts by error code.
    async def run_profile_job() -> None:
        await page.goto(f"{console.url}/profiles?q=Local+IMAP+{tag}")
        await page.get_by_role("button", name=f"Test and enable the mailboxes of Local IMAP {tag}").click()
        await expect(page).to_have_url(re.compile(r"/jobs/"))
        await expect(page.locator("#job-state")).to_have_text("completed", timeout=WAIT_MS)

    await run_profile_job()
    await expect(page.locator("#job-succeeded")).to_have_text("1")
    # ben's wrong password is not tried again within the breaker's window: refused without a login.
    await expect(page.locator("#job-codes")).to_contain_text(re.compile("auth_failed|auth_breaker_open"))
    await expect(page.locator("#job-codes tbody tr")).to_have_count(1)
    await console.shot(page, "job")

    # Fix ben's password (write-only form), then the job again.
    await page.goto(f"{console.url}/mailboxes/{bad}")
    await page.get_by_label("User name").fill("bob")
    await page.get_by_label("New password").fill("bob-pw")
    await page.get_by_role("button", name="Save credentials").click()
    await expect(page.get_by_role("status")).to_contain_text("Credentials saved.")
    assert "bob-pw" not in await page.content()

    await run_profile_job()
    await expect(page.locator("#job-succeeded")).to_have_text("2")
    await expect(page.locator("#job-bar")).to_have_attribute("value", "2")
    await expect(page.locator("#job-codes")).to_have_count(0)
    # A finished job cannot be cancelled: the service's refusal is shown (the button is gone already).
    await expect(page.get_by_role("button", name="Cancel job")).to_have_count(0)
    job_url = page.url.split("?")[0]
    await page.goto(f"{console.url}/settings")
    csrf = await page.locator("input[name=csrf]").first.get_attribute("value")
    refused = await page.request.post(f"{job_url}/cancel", form={"csrf": csrf or ""})
    assert "finished" in (await refused.text()), await refused.text()

    # Test & Enable on ben's own page: its trace and history update live, without a reload.
    await page.goto(f"{console.url}/mailboxes/{bad}")
    runs_before = await page.locator("#hist-h + table tbody tr").count()
    await page.get_by_role("button", name="Test & Enable").click()
    await expect(page.get_by_role("status")).to_contain_text("Test & Enable started")
    await expect(page.locator("#hist-h + table tbody tr")).to_have_count(runs_before + 1, timeout=WAIT_MS)
    await expect(page.locator("#status-h + dl")).not_to_contain_text("running or scheduled", timeout=WAIT_MS)

    # The bad owner's wall, still open, shows the alert resolved.
    await expect(wall.locator("article.alert .st-resolved").first).to_be_visible(timeout=WAIT_MS)
    await wall.get_by_role("button", name="Mark read").first.click()
    await expect(wall.get_by_role("status")).to_have_text("Marked read.")
    await wall.get_by_role("button", name=f"Delete all alerts of user:{bad}").click()
    await expect(wall.get_by_role("status")).to_contain_text("Deleted")
    await expect(wall.locator("#wall-count")).to_have_text("0 alerts")

    # Edit (change multiple records) on one mailbox; the profile cannot go while it is default and in use.
    await page.goto(f"{console.url}/mailboxes?owner_kind=user")
    await page.get_by_label(f"Select {good}@mail.test").check()
    await page.get_by_role("button", name="Edit (change multiple records)").click()
    await page.get_by_label("Incoming email").select_option("email_router")
    await page.get_by_role("button", name="Change").click()
    await expect(page.get_by_role("status")).to_have_text("Changed 1 mailbox.")
    await page.goto(f"{console.url}/mailboxes/{good}")
    await expect(page.locator("#props-h + dl")).to_contain_text("email_router / server_side_sync")
    await page.goto(f"{console.url}/profiles?q=Local+IMAP+{tag}")
    await page.get_by_role("link", name=f"Delete Local IMAP {tag}").click()
    await expect(page.locator("#in-use")).to_contain_text("2 mailboxes")
    await page.get_by_role("button", name="Delete profile").click()
    await expect(page.get_by_role("status")).to_contain_text("default profile")

    # Edit the profile (PATCH): the stored values fill the form, the change is kept.
    await page.goto(f"{console.url}/profiles?q=Local+IMAP+{tag}")
    await page.get_by_role("link", name=f"Local IMAP {tag}", exact=True).click()
    await expect(page.locator("#f-incoming-port")).to_have_value(str(console.dovecot.imaps_port))
    await page.get_by_label("Description").fill("Dovecot on this machine")
    await page.get_by_role("button", name="Save").click()
    await expect(page.get_by_role("status")).to_have_text(f"Profile Local IMAP {tag} saved.")
    await page.get_by_role("link", name=f"Local IMAP {tag}", exact=True).click()
    await expect(page.get_by_label("Description")).to_have_value("Dovecot on this machine")

    # Test & Enable Mailboxes on a selection from the list.
    await select_both()
    await page.get_by_role("button", name="Test & Enable Mailboxes").click()
    await expect(page.get_by_role("status")).to_have_text("Test & Enable started for 2 mailboxes.")

    await page.goto(f"{console.url}/jobs")
    await expect(page.locator("#job-table tbody tr").first).to_contain_text("completed", timeout=WAIT_MS)
    await console.shot(page, "jobs")
    await page.goto(f"{console.url}/errors")
    await expect(page.locator("#auth_failed")).to_contain_text("Permanent")
    await console.shot(page, "errors")
    assert SCRIPT_ERRORS == [], f"script or Content-Security-Policy errors: {SCRIPT_ERRORS}"


PAGES = (
    "/mailboxes",
    "/mailboxes/new",
    "/profiles",
    "/profiles/new",
    "/settings",
    "/jobs",
    "/alerts",
    "/errors",
)


async def test_read_only_pages_work_without_javascript(console: ConsoleStack) -> None:
    context = await console.browser.new_context(viewport=VIEWPORT, java_script_enabled=False)  # type: ignore[attr-defined]
    page = await context.new_page()
    await sign_in(console, page, "/errors")  # the sign-in form is a plain form too
    await expect(page.locator("#auth_failed")).to_contain_text("Update the mailbox credentials")
    for path in ("/mailboxes", "/profiles", "/jobs", "/alerts", "/settings"):
        resp = await page.goto(f"{console.url}{path}")
        assert resp is not None and resp.status == 200, path
        await expect(page.locator("h1")).to_have_count(1)
        await expect(page.locator("main")).to_be_visible()
    await context.close()


async def test_every_control_has_a_label_and_every_page_one_heading(console: ConsoleStack) -> None:
    page = await new_page(console)
    await sign_in(console, page)
    for path in PAGES:
        await page.goto(f"{console.url}{path}")
        missing = await unlabeled(page)
        assert missing == [], f"{path}: controls without a label: {missing}"
        await expect(page.locator("h1")).to_have_count(1)
        await page.keyboard.press("Tab")  # the first stop is the skip link
        assert await page.evaluate("document.activeElement.textContent") == "Skip to content"
    assert SCRIPT_ERRORS == [], f"script or Content-Security-Policy errors: {SCRIPT_ERRORS}"


async def test_forms_need_the_session_and_its_csrf_token(console: ConsoleStack) -> None:
    page = await new_page(console)
    resp = await page.request.post(
        f"{console.url}/mailboxes/actions", form={"action": "approve"}, max_redirects=0
    )
    assert resp.status == 303 and "/signin" in resp.headers["location"]
    await sign_in(console, page)
    forged = await page.request.post(
        f"{console.url}/mailboxes/actions", form={"action": "approve", "mailbox_ids": "x", "csrf": "forged"}
    )
    assert forged.status == 400
    await page.get_by_role("button", name="Sign out").click()
    await expect(page).to_have_url(re.compile(r"/signin"))
    await page.goto(f"{console.url}/mailboxes")
    await expect(page).to_have_url(re.compile(r"/signin\?next=/mailboxes"))


async def test_mailbox_list_pages_and_filters(console: ConsoleStack) -> None:
    tag = uuid.uuid4().hex[:6]
    queues = [
        {
            "mailbox_id": f"q{tag}{i}",
            "email": f"q{tag}{i}@mail.test",
            "owner": {"kind": "queue", "id": f"desk{tag}", "name": "Help desk"},
        }
        for i in range(7)
    ]
    auth = {"Authorization": f"Bearer {console.token}"}
    async with httpx.AsyncClient(base_url=console.services["mailbox"], headers=auth) as api:
        resp = await api.post("/mailboxes/batch", json={"mailboxes": queues})
        assert resp.status_code == 201, resp.text
    page = await new_page(console)
    await sign_in(console, page, f"/mailboxes?owner_id=desk{tag}")
    await expect(page).to_have_url(re.compile(f"owner_id=desk{tag}$"))  # back where sign-in was asked
    rows = page.locator("#mailbox-rows tbody tr")
    await expect(rows).to_have_count(5)
    await page.get_by_role("link", name="Next page").click()
    await expect(rows).to_have_count(2)
    await expect(page.get_by_role("link", name="Next page")).to_have_count(0)
    await page.get_by_role("link", name="First page").click()
    await expect(rows).to_have_count(5)
    await page.get_by_label("Approval").select_option("approved")
    await page.get_by_role("button", name="Filter").click()
    await expect(rows).to_have_text(["No mailboxes match."])
    await page.get_by_label("Approval").select_option("pending")
    await page.get_by_role("button", name="Filter").click()
    await expect(rows).to_have_count(5)


async def test_a_running_job_is_cancelled_from_its_page(console: ConsoleStack) -> None:
    """A mail server that accepts connections and never answers keeps the job running long enough."""
    from mailwarden_servers.silent import SilencingProxy

    tag = uuid.uuid4().hex[:6]
    auth = {"Authorization": f"Bearer {console.token}"}
    proxy = await SilencingProxy(console.dovecot.imaps_port).start()
    proxy.go_silent()
    try:
        async with (
            httpx.AsyncClient(base_url=console.services["profile"], headers=auth) as profiles,
            httpx.AsyncClient(base_url=console.services["mailbox"], headers=auth) as mailboxes,
        ):
            settings = (await profiles.get("/settings")).json()
            allowed = sorted({*settings["allowed_ports"], proxy.port, console.smtp.port_starttls})
            body = {k: settings[k] for k in ("default_profile_id", "alert_levels")} | {
                "port_preset": "custom",
                "allowed_ports": allowed,
            }
            assert (await profiles.put("/settings", json=body)).status_code == 200
            owner = {"kind": "user", "id": f"slow{tag}", "name": "Slow"}
            resp = await profiles.post(
                "/profiles",
                json={
                    "name": f"Silent {tag}",
                    "owner": owner,
                    "incoming_protocol": "imap",
                    "incoming": {"host": "127.0.0.1", "port": proxy.port, "tls": "implicit"},
                    "use_same_settings_for_outgoing": False,
                    "outgoing": {"host": "127.0.0.1", "port": console.smtp.port_starttls, "tls": "starttls"},
                    "advanced": {"max_concurrent_connections": 1},
                },
            )
            assert resp.status_code == 201, resp.text
            profile_id = resp.json()["profile_id"]
            batch = [
                {
                    "mailbox_id": f"s{tag}{i}",
                    "email": f"s{tag}{i}@mail.test",
                    "owner": owner,
                    "profile_id": profile_id,
                    "credentials": {"username": "alice", "password": "alice-pw"},
                }
                for i in range(4)
            ]
            resp = await mailboxes.post("/mailboxes/batch", json={"mailboxes": batch})
            assert resp.status_code == 201, resp.text
            ids = [m["mailbox_id"] for m in batch]
            resp = await mailboxes.post("/mailboxes/approve", json={"mailbox_ids": ids})
            assert resp.status_code == 200, resp.text

        page = await new_page(console)
        await sign_in(console, page, f"/profiles?q=Silent+{tag}")
        await page.get_by_role("button", name=f"Test and enable the mailboxes of Silent {tag}").click()
        await expect(page.locator("#job-state")).to_have_text("running")
        await page.get_by_role("button", name="Cancel job").click()
        await expect(page.get_by_role("status")).to_have_text("Job cancelled: no more tests are requested.")
        await expect(page.locator("#job-state")).to_have_text("cancelled")
        await expect(page.get_by_role("button", name="Cancel job")).to_have_count(0)
    finally:
        await proxy.close()
