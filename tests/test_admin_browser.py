"""The admin in a real browser: Debian's Chromium driven by Playwright, against the demo
site served by uvicorn in a subprocess (its own SQLite database and pool directory).

Each test saves a screenshot under ``tests/artifacts/``. Skipped, with the
reason, when no ``chromium`` is on PATH (``apt-get install chromium``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.browser_site import PASSWORD, ROOT, Site, serve, site_environment

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

if CHROMIUM is None:
    pytest.skip(
        "no chromium on PATH: install Debian's (apt-get install chromium) to run the browser tests",
        allow_module_level=True,
    )

from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[Site]:
    with serve(tmp_path_factory.mktemp("site")) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    playwright = sync_playwright().start()
    try:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
    finally:
        playwright.stop()


def open_page(browser: Browser, site: Site, *, dark: bool = False) -> Page:
    context = browser.new_context(
        base_url=site.url,
        viewport={"width": 1280, "height": 860},
        color_scheme="dark" if dark else "light",
    )
    context.set_default_timeout(10_000)
    return context.new_page()


def log_in(page: Page, username: str) -> None:
    page.goto("/admin/")
    expect(page).to_have_url(re.compile(r"/admin/login/\?next=/admin/$"))
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    expect(page.locator("#site-name")).to_be_visible()
    expect(page).to_have_url(re.compile(r"/admin/$"))


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)


def today() -> str:
    return datetime.now(UTC).date().isoformat()


def post_task(site: Site, **body) -> dict:
    with site.client(site.user_token("master")) as client:
        answer = client.post("/pool/task", json=body)
        assert answer.status_code == 201, answer.text
        return answer.json()


def pending_ids(site: Site, device_id: str) -> list[str]:
    with site.client(site.device_tokens[device_id]) as client:
        answer = client.get("/pool/pending")
        assert answer.status_code == 200, answer.text
        return [task["id"] for task in answer.json()]


def test_each_role_sees_its_pages_on_the_index(browser, site):
    page = open_page(browser, site)
    log_in(page, "boss")
    for name in ("Day files", "Tasks", "Devices", "Pool roles"):
        expect(
            page.locator("#content-main").get_by_role("link", name=name, exact=True)
        ).to_be_visible()
    screenshot(page, "index_admin")
    page.context.close()

    page = open_page(browser, site)
    log_in(page, "master")
    main = page.locator("#content-main")
    expect(main.get_by_role("link", name="Tasks", exact=True)).to_be_visible()
    expect(main.get_by_role("link", name="Day files", exact=True)).to_have_count(0)
    screenshot(page, "index_master")
    page.goto(f"/admin/taskpool/dayfile/{today()}/")
    expect(page.locator("h1")).to_have_text("Permission denied")
    expect(page.locator("#refusal")).to_have_text("This page needs the pool role admin (or above).")
    expect(page.locator("#content-main")).to_contain_text("Your pool role is master.")
    screenshot(page, "forbidden_day_files")
    page.get_by_role("link", name="Back to the admin's home").click()
    expect(page).to_have_url(re.compile(r"/admin/$"))
    page.context.close()


def test_validate_a_device_from_the_changelist(browser, site):
    with site.client(site.device_tokens["new-1"]) as client:
        assert client.get("/pool/pending").status_code == 403  # not validated yet
    page = open_page(browser, site)
    log_in(page, "boss")
    page.get_by_role("link", name="Devices", exact=True).first.click()
    expect(page.locator("#result_list")).to_be_visible()
    row = page.locator("#result_list tbody tr", has=page.get_by_role("link", name="new-1"))
    expect(row.locator("td.field-validated img")).to_have_attribute("alt", "False")
    expect(row.locator("td.field-online_badge")).to_have_text("offline")
    row.locator("input.action-select").check()
    page.select_option("select[name=action]", "validate")
    page.click("button[name=index]")
    expect(page.locator("ul.messagelist")).to_contain_text("1 device validated.")
    row = page.locator("#result_list tbody tr", has=page.get_by_role("link", name="new-1"))
    expect(row.locator("td.field-validated img")).to_have_attribute("alt", "True")
    screenshot(page, "devices_validated")
    with site.client(site.device_tokens["new-1"]) as client:
        assert client.get("/pool/pending").status_code == 200
    # The online filter: pi-2 has just sent a heartbeat, new-1 polled; quiet-1 never spoke.
    with site.client(site.device_tokens["pi-2"]) as client:
        assert client.post("/pool/heartbeat", json={}).status_code == 201
    page.get_by_role("link", name="Online", exact=True).click()
    expect(page.locator("#changelist-filter li.selected")).to_contain_text(["Online"])
    online = page.locator("#result_list tbody th.field-id").all_inner_texts()
    assert {"new-1", "pi-2"} <= set(online) and "quiet-1" not in online
    badges = page.locator("#result_list tbody td.field-online_badge").all_inner_texts()
    assert badges == ["online"] * len(online)
    screenshot(page, "devices_online_filter")
    page.context.close()


def test_issue_a_new_token_on_the_device_page(browser, site):
    old_token = site.device_tokens["token-1"]
    with site.client(old_token) as client:
        assert client.post("/pool/heartbeat", json={"body": "hello"}).status_code == 201
    page = open_page(browser, site)
    log_in(page, "boss")
    page.goto("/admin/taskpool/deviceuser/token-1/change/")
    expect(page.locator("#device-messages")).to_contain_text("heartbeat")
    expect(page.locator("#device-activity")).to_contain_text("online")
    screenshot(page, "device_change")
    page.click("#issue-token-link")
    expect(page.locator("#content-main")).to_contain_text(
        "Every token issued to it before stops working"
    )
    page.click("#issue-token")
    token = page.locator("#device-token").input_value()
    screenshot(page, "device_token")
    with site.client(old_token) as client:
        assert client.get("/pool/pending").status_code == 401
    with site.client(token) as client:
        assert client.get("/pool/pending").status_code == 200
    page.goto("/admin/taskpool/deviceuser/token-1/token/")  # the GET page shows no token
    expect(page.locator("#device-token")).to_have_count(0)
    page.context.close()


def test_a_pool_admin_finds_a_silent_device_and_issues_it_a_token(browser, site):
    """A pool admin with no model permissions and no superuser flag: the role is enough."""
    page = open_page(browser, site)
    log_in(page, "opsadmin")
    page.locator("#content-main").get_by_role("link", name="Devices", exact=True).click()
    page.fill("#searchbar", "far")
    page.click("#changelist-search input[type=submit]")
    page.get_by_role("link", name="Never seen", exact=True).click()
    row = page.locator("#result_list tbody tr", has=page.get_by_role("link", name="far-1"))
    expect(row.locator("td.field-online_badge")).to_have_text("offline")
    expect(page.locator("#result_list tbody tr")).to_have_count(1)
    screenshot(page, "pool_admin_finds_offline_device")
    row.get_by_role("link", name="far-1").click()
    expect(page.locator("#device-activity")).to_contain_text("offline")
    page.click("#issue-token-link")
    page.click("#issue-token")
    token = page.locator("#device-token").input_value()
    screenshot(page, "pool_admin_issues_token")
    with site.client(site.device_tokens["far-1"]) as client:
        assert client.get("/pool/pending").status_code == 401  # revoked by the new one
    with site.client(token) as client:
        assert client.get("/pool/pending").status_code == 200
    page.context.close()


def test_a_narrow_task_list_breaks_addresses_between_ids(browser, site):
    post_task(site, to="device:[pi-1,pi-2,token-1,cancel-1,quiet-1,far-1]", title="Many")
    page = open_page(browser, site)
    page.set_viewport_size({"width": 900, "height": 860})
    log_in(page, "master")
    page.goto("/admin/taskpool/task/")
    ids = page.locator("#result_list td.taskpool-address .taskpool-id")
    expect(ids.first).to_be_visible()
    lines_per_id = ids.evaluate_all("spans => spans.map(span => span.getClientRects().length)")
    assert lines_per_id and set(lines_per_id) == {1}, lines_per_id
    screenshot(page, "task_list_narrow")
    page.context.close()


def test_on_a_phone_the_task_lists_search_fits_and_its_table_scrolls_inside(browser, site):
    post_task(site, to="device:[pi-1,pi-2,token-1,cancel-1,quiet-1,far-1]", title="Many")
    page = open_page(browser, site)
    page.set_viewport_size({"width": 390, "height": 844})
    log_in(page, "master")
    page.goto("/admin/taskpool/task/")
    overflow = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 1
    for field in ("#searchbar", "#filter-to", "#filter-from"):
        box = page.locator(field).bounding_box()
        assert box is not None and box["width"] >= 150 and box["x"] + box["width"] <= 390, field
    screenshot(page, "task_list_phone")
    page.context.close()


def test_on_a_phone_a_thread_and_a_device_page_scroll_their_tables_not_the_page(browser, site):
    task = post_task(
        site, to="device:[pi-1,pi-2,token-1,cancel-1,quiet-1,far-1]", title="A rather long title"
    )
    page = open_page(browser, site)
    page.set_viewport_size({"width": 390, "height": 844})
    log_in(page, "boss")
    for path in (f"/admin/taskpool/task/{task['id']}/", "/admin/taskpool/deviceuser/pi-1/change/"):
        page.goto(path)
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 1, (path, overflow)
    screenshot(page, "device_page_phone")
    page.context.close()


def test_day_files_list_a_filtered_day_and_a_message(browser, site):
    task = post_task(site, to="device:pi-1", title="Rotate the logs", body="logrotate -f")
    with site.client(site.device_tokens["pi-1"]) as client:
        answer = client.post(
            "/pool/response", json={"parent_id": task["id"], "status": "progress", "title": "half"}
        )
        assert answer.status_code == 201
    page = open_page(browser, site)
    log_in(page, "boss")
    page.get_by_role("link", name="Day files", exact=True).click()
    day_row = page.locator("#result_list tbody tr").first
    expect(day_row.locator("th")).to_have_text(today())
    screenshot(page, "day_files")
    day_row.get_by_role("link", name=today(), exact=True).click()
    expect(page.locator("h1")).to_have_text(f"Messages of {today()}")
    screenshot(page, "day_page")

    page.locator("#changelist-filter").get_by_role("link", name="task", exact=True).click()
    types = page.locator("#result_list tbody td:nth-child(2)")
    expect(types.first).to_have_text("task")
    assert set(types.all_inner_texts()) == {"task"}
    page.fill("#searchbar", "rotate THE")
    page.click("#changelist-search input[type=submit]")
    expect(page.locator("#result_list tbody tr")).to_have_count(1)
    expect(page.locator("#result_list tbody tr")).to_contain_text("Rotate the logs")
    assert "type=task" in page.url and "q=rotate+THE" in page.url
    screenshot(page, "day_page_filtered")

    page.locator("#result_list tbody tr td.nowrap a").first.click()
    expect(page.locator("#message-json")).to_contain_text(f'"id": "{task["id"]}"')
    expect(page.locator("#message-json")).to_contain_text('"body": "logrotate -f"')
    screenshot(page, "message_json")

    with page.expect_download() as download_info:
        page.goto(f"/admin/taskpool/dayfile/{today()}/")
        page.locator(".object-tools a[download]").click()
    download = download_info.value
    assert download.suggested_filename == f"{today()}.jsonl"
    assert task["id"] in Path(download.path()).read_text()
    page.context.close()


def test_follow_a_task_from_its_day_to_its_thread(browser, site):
    task = post_task(site, to="device:[pi-1,pi-2]", title="Update firmware")
    with site.client(site.device_tokens["pi-2"]) as client:
        answer = client.post("/pool/response", json={"parent_id": task["id"], "status": "done"})
        assert answer.status_code == 201
    page = open_page(browser, site)
    log_in(page, "boss")
    page.goto(f"/admin/taskpool/dayfile/{today()}/?q={task['id']}&type=task")
    page.locator("#result_list tbody tr").get_by_role("link", name="Thread ›").click()
    expect(page.locator("h1")).to_have_text("Update firmware")
    executions = page.locator("#executions tbody tr")
    expect(executions).to_have_count(2)
    expect(executions.nth(0)).to_contain_text("pi-1")
    expect(executions.nth(0)).to_contain_text("pending")
    expect(executions.nth(1)).to_contain_text("pi-2")
    expect(executions.nth(1)).to_contain_text("done")
    expect(page.locator("#responses tbody tr")).to_have_count(1)
    screenshot(page, "thread")
    page.context.close()


def test_the_folded_job_options_read_as_one_heading_line(browser, site):
    """As the admin's own collapsible fieldsets: the marker and the heading on one line."""
    page = open_page(browser, site)
    log_in(page, "master")
    page.goto("/admin/taskpool/task/add/")
    summary = page.locator("#job-options summary").bounding_box()
    heading = page.locator("#job-options summary h2").bounding_box()
    assert summary is not None and heading is not None
    # On the summary's first line (below its 8px padding), after the marker.
    assert heading["y"] - summary["y"] <= 10 and heading["x"] > summary["x"] + 12
    page.context.close()


def test_send_a_task_and_see_it_appear(browser, site):
    page = open_page(browser, site)
    log_in(page, "master")
    page.get_by_role("link", name="Tasks", exact=True).click()
    page.get_by_role("link", name="Send a task").click()
    page.fill("#id_to", "pi-2")  # not an address
    page.fill("#id_title", "Reboot")
    page.fill("#id_meta", '["not", "an object"]')
    page.fill("#id_ttl", "soon")
    page.click("input[name=_send]")
    # Every field's error at once, in the API's own words.
    expect(page.locator(".errornote")).to_be_visible()
    expect(page.locator(".field-meta .errorlist")).to_have_text("Must be a JSON object.")
    expect(page.locator(".field-ttl .errorlist")).to_have_text("Must be an integer.")
    expect(page.locator(".field-to .errorlist")).to_contain_text("'pi-2' is not a task address")
    screenshot(page, "send_task_errors")
    page.fill("#id_meta", '{"delay": 5}')
    page.fill("#id_ttl", "600")
    page.fill("#id_to", "device:pi-2")
    page.fill("#id_body", "sudo reboot")
    page.select_option("#id_mode", "any")
    page.click("input[name=_send]")
    expect(page.locator("ul.messagelist")).to_contain_text("Task sent to device:pi-2.")
    expect(page.locator("h1")).to_have_text("Reboot")
    expect(page.locator(".taskpool-task")).to_contain_text("user:master@example.com")
    expect(page.locator(".taskpool-task")).to_contain_text("any one device")
    task_id = page.locator(".taskpool-task code").first.inner_text()
    screenshot(page, "send_task_sent")
    assert task_id in pending_ids(site, "pi-2")

    page.get_by_role("link", name="Tasks").first.click()
    rows = page.locator("#result_list tbody tr")
    expect(rows.first).to_contain_text("Reboot")
    expect(rows.first).to_contain_text("device:pi-2")
    screenshot(page, "task_list")
    page.context.close()


def test_back_after_sending_and_send_again_asks_before_a_second_task(browser, site):
    page = open_page(browser, site)
    log_in(page, "master")
    page.goto("/admin/taskpool/task/add/")
    page.fill("#id_to", "device:quiet-1")
    page.fill("#id_title", "Restart the sensor")
    page.click("input[name=_send]")
    expect(page.locator("ul.messagelist")).to_contain_text("Task sent to device:quiet-1.")
    before = pending_ids(site, "quiet-1")
    page.go_back()  # the form again, filled in by the browser, with a new key
    expect(page.locator("#id_title")).to_have_value("Restart the sensor")
    page.click("input[name=_send]")
    expect(page.locator("#send-repeated")).to_contain_text("Nothing was sent")
    assert pending_ids(site, "quiet-1") == before
    page.check("#id_send_again")
    page.click("input[name=_send]")
    expect(page.locator("ul.messagelist")).to_contain_text("Task sent to device:quiet-1.")
    assert len(pending_ids(site, "quiet-1")) == len(before) + 1
    page.context.close()


def test_cancel_a_task(browser, site):
    task = post_task(site, to="device:cancel-1", title="Take a backup")
    assert task["id"] in pending_ids(site, "cancel-1")
    page = open_page(browser, site)
    log_in(page, "master")
    page.goto(f"/admin/taskpool/task/{task['id']}/")
    expect(page.locator("#task-state")).to_have_text("open")
    page.fill("#id_reason", "not needed after all")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#cancel-form input[type=submit]")
    expect(page.locator("ul.messagelist")).to_contain_text("Task cancelled")
    expect(page.locator("#task-state")).to_have_text("cancelled")
    expect(page.locator("#executions tbody tr")).to_contain_text("cancelled")
    expect(page.locator("#responses tbody tr")).to_contain_text("not needed after all")
    expect(page.locator("#cancel-form")).to_have_count(0)
    screenshot(page, "thread_cancelled")
    assert task["id"] not in pending_ids(site, "cancel-1")
    page.context.close()


def test_a_master_role_given_on_a_users_page_lets_them_log_in(browser, site):
    """As ``taskpool_role`` does: the pages of a master are in the admin, behind its login."""
    subprocess.run(
        [sys.executable, "manage.py", "taskpool_role", "newbie", "user", "--password", PASSWORD],
        cwd=ROOT,
        env=site_environment(site.var_dir),
        check=True,
        capture_output=True,
        timeout=60,
    )
    page = open_page(browser, site)
    log_in(page, "boss")
    page.goto("/admin/auth/user/?q=newbie")
    page.get_by_role("link", name="newbie", exact=True).click()
    expect(page.locator("#id_is_staff")).not_to_be_checked()
    role = page.locator("#id_taskpool_role-0-role")
    expect(page.locator("#taskpool_role-group")).to_contain_text(
        "Giving admin or master also makes the user staff"
    )
    role.select_option("master")
    page.click("input[name=_continue]")
    expect(page.locator(".messagelist")).to_contain_text(
        "Newbie is now staff, so they can log in to the admin."
    )
    expect(page.locator("#id_is_staff")).to_be_checked()
    page.context.close()

    page = open_page(browser, site)
    log_in(page, "newbie")
    expect(
        page.locator("#content-main").get_by_role("link", name="Tasks", exact=True)
    ).to_be_visible()
    page.context.close()


def test_pages_in_dark_mode(browser, site):
    task = post_task(site, to="device:*", title="Everyone, check in")
    page = open_page(browser, site, dark=True)
    log_in(page, "boss")
    for name, path in [
        ("dark_day_files", "/admin/taskpool/dayfile/"),
        ("dark_day_page", f"/admin/taskpool/dayfile/{today()}/"),
        ("dark_thread", f"/admin/taskpool/task/{task['id']}/"),
        ("dark_devices", "/admin/taskpool/deviceuser/"),
        ("dark_send", "/admin/taskpool/task/add/"),
    ]:
        page.goto(path)
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(18, 18, 18)", (name, background)
        screenshot(page, name)
    page.goto(f"/admin/taskpool/task/{task['id']}/")
    # The admin's dark --message-success-bg: the badge follows the theme. (Waited for: the
    # live page may be putting in a fresh copy of itself as the check looks.)
    expect(page.locator("#task-state")).to_have_css("background-color", "rgb(0, 107, 27)")
    page.context.close()
