"""The dashboard in a real browser (Debian's Chromium driven by Playwright) against the demo
site served by uvicorn: its figures for a known pool, kept live from the stream with the
admin's session, resumed after the server restarts; the thread page kept live the same
way; who may see it. Screenshots in light and dark theme go to ``tests/artifacts/``.

The tests of this module run in order on one site of their own (the restart test stops
and starts it): each reads the figures before it acts, and expects what it did to show.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import pytest

from taskpool.days import day_file_name
from taskpool.messages import encode_line, format_timestamp, new_message_id
from tests.browser_site import Site, serve
from tests.test_admin_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    log_in,
    open_page,
    post_task,
    screenshot,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402

URL = "/admin/taskpool/dashboard/"
#: How soon a message posted through the API must show on an open page.
LIVE_WITHIN_MS = 2000


class RunningSite:
    """The demo site, served until ``close``; ``restart`` kills the server and serves it again."""

    def __init__(self, var_dir: Path) -> None:
        self.var_dir = var_dir
        self._stack = ExitStack()
        self.site: Site = self._stack.enter_context(serve(var_dir))

    def stop(self) -> None:
        """Kill the server (as a crash would), leaving its database and pool."""
        assert self.site.server is not None
        self.site.server.kill()
        self.site.server.wait()
        self._stack.close()

    def start(self) -> None:
        self._stack = ExitStack()
        self.site = self._stack.enter_context(serve(self.var_dir, port=self.site.port, seeded=True))

    def close(self) -> None:
        self._stack.close()


@pytest.fixture(scope="module")
def running(tmp_path_factory) -> Iterator[RunningSite]:
    running = RunningSite(tmp_path_factory.mktemp("dashboard-site"))
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
def site(running: RunningSite) -> Site:
    return running.site


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    playwright = sync_playwright().start()
    try:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
    finally:
        playwright.stop()


def answer(site: Site, device_id: str, task_id: str, status: str, **fields) -> dict:
    with site.client(site.device_tokens[device_id]) as client:
        response = client.post(
            "/pool/response", json={"parent_id": task_id, "status": status, **fields}
        )
        assert response.status_code == 201, response.text
        return response.json()


def heartbeat(site: Site, device_id: str) -> None:
    with site.client(site.device_tokens[device_id]) as client:
        assert client.post("/pool/heartbeat", json={}).status_code == 201


def metric(page: Page, name: str):
    return page.locator(f'[data-metric="{name}"]')


def number(page: Page, name: str) -> int:
    return int(metric(page, name).inner_text())


def open_dashboard(browser: Browser, site: Site, username: str, *, dark: bool = False) -> Page:
    page = open_page(browser, site, dark=dark)
    log_in(page, username)
    page.goto(URL)
    expect(page.locator("[data-live-status]")).to_have_attribute("data-live-status", "live")
    return page


def test_the_dashboard_shows_the_counts_of_a_known_pool(browser, site):
    first = post_task(site, to="device:pi-1", title="update firmware")
    second = post_task(site, to="device:pi-1", title="collect logs")
    answer(site, "pi-1", first["id"], "done")
    answer(site, "pi-1", second["id"], "failed", title="no space left", body="on /var/log")
    heartbeat(site, "pi-2")

    page = open_dashboard(browser, site, "boss")
    expect(page.locator("h1")).to_have_text("Dashboard")
    for name, value in {
        "devices-online": "2",  # pi-1 and pi-2 were heard from
        "devices-offline": "0",
        "devices-never-seen": "4",  # token-1, cancel-1, quiet-1, far-1
        "devices-waiting": "0",  # new-1 was left unvalidated by staff: it asked for nothing
        "tasks-sent-today": "2",
        "tasks-sent-7d": "2",
        "tasks-done-today": "1",
        "tasks-failed-today": "1",
        "tasks-pending-today": "0",
        "messages-today": "5",
    }.items():
        expect(metric(page, name)).to_have_text(value)
    failures = page.locator("#failures tbody tr")
    expect(failures).to_have_count(1)
    expect(failures.first).to_contain_text("no space left")
    expect(failures.first).not_to_contain_text("on /var/log")
    expect(failures.first.get_by_role("link", name="pi-1")).to_have_attribute(
        "href", "/admin/taskpool/deviceuser/pi-1/change/"
    )

    # Each number opens the task list filtered the same way.
    metric(page, "tasks-failed-today").click()
    expect(page).to_have_url(
        f"{site.url}/admin/taskpool/task/?since={today()}T00%3A00%3A00Z&status=failed"
    )
    expect(page.locator("#content-main")).to_contain_text("collect logs")
    expect(page.locator("#content-main")).not_to_contain_text("update firmware")
    page.context.close()


def test_a_task_answered_through_the_api_shows_without_a_reload(browser, site):
    page = open_dashboard(browser, site, "boss")
    page.evaluate("window.notReloaded = true")
    sent = number(page, "tasks-sent-today")
    failed = number(page, "tasks-failed-today")
    current_hour = page.locator("#dashboard-hourly [data-chart='tasks'] .taskpool-bar-current")
    in_this_hour = int(current_hour.get_attribute("data-value") or 0)

    task = post_task(site, to="device:pi-2", title="restart sensor-agent")
    answer(site, "pi-2", task["id"], "failed", title="sensor-agent would not stop")

    expect(metric(page, "tasks-sent-today")).to_have_text(str(sent + 1), timeout=LIVE_WITHIN_MS)
    expect(metric(page, "tasks-failed-today")).to_have_text(str(failed + 1), timeout=LIVE_WITHIN_MS)
    expect(page.locator("#failures tbody tr").first).to_contain_text(
        "sensor-agent would not stop", timeout=LIVE_WITHIN_MS
    )
    expect(
        page.locator("#dashboard-hourly [data-chart='tasks'] .taskpool-bar-current")
    ).to_have_attribute("data-value", str(in_this_hour + 1), timeout=LIVE_WITHIN_MS)
    assert page.evaluate("window.notReloaded") is True
    page.context.close()


def test_a_refresh_keeps_the_focused_link_so_the_keyboard_can_go_on(browser, site):
    """A busy pool refreshes the page a few times a second: an element that stays is kept,
    with the keyboard's focus on it, rather than drawn anew."""
    page = open_dashboard(browser, site, "boss")
    sent = number(page, "tasks-sent-today")
    link = metric(page, "tasks-sent-today")
    link.focus()
    page.evaluate("document.activeElement.keptByTheRefresh = 'yes'")  # on the node itself
    post_task(site, to="device:pi-2", title="focus check")
    expect(link).to_have_text(str(sent + 1), timeout=LIVE_WITHIN_MS)
    focused = page.evaluate(
        "[document.activeElement.dataset.metric, document.activeElement.keptByTheRefresh]"
    )
    assert focused == ["tasks-sent-today", "yes"]
    page.keyboard.press("Tab")  # and the next link is where the keyboard goes
    assert page.evaluate("document.activeElement.dataset.metric") == "tasks-sent-7d"
    page.context.close()


def test_a_thread_page_shows_new_answers_as_they_come(browser, site):
    task = post_task(site, to="device:[pi-1,pi-2]", title="rotate keys")
    page = open_page(browser, site)
    log_in(page, "master")
    page.goto(f"/admin/taskpool/task/{task['id']}/")
    page.evaluate("window.notReloaded = true")
    executions = page.locator("#executions tbody")
    expect(executions).to_contain_text("pending")
    time.sleep(0.5)  # the page's stream is open by now; the answer is what we wait for

    page.fill("#id_reason", "half typed")
    answer(site, "pi-1", task["id"], "progress", title="halfway")
    expect(page.locator("#responses tbody")).to_contain_text("halfway", timeout=LIVE_WITHIN_MS)
    expect(page.locator("#id_reason")).to_have_value("half typed")  # the form is left alone
    answer(site, "pi-2", task["id"], "done", title="keys rotated")
    expect(page.locator("#responses tbody")).to_contain_text("keys rotated", timeout=LIVE_WITHIN_MS)
    pi2 = executions.locator("tr", has_text="pi-2")
    expect(pi2.locator(".taskpool-badge")).to_have_text("done", timeout=LIVE_WITHIN_MS)
    answer(site, "pi-1", task["id"], "failed", title="no key")
    expect(executions.locator("tr", has_text="pi-1").locator(".taskpool-badge")).to_have_text(
        "failed", timeout=LIVE_WITHIN_MS
    )
    # Every device has finished: the task shows closed, and may no longer be cancelled.
    expect(page.locator("#task-state")).to_have_text("finished", timeout=LIVE_WITHIN_MS)
    expect(page.locator("#cancel-form")).to_have_count(0)
    assert page.evaluate("window.notReloaded") is True
    page.context.close()


def test_a_thread_page_of_many_answers_keeps_the_page_it_shows_live(browser, site):
    task = post_task(site, to="device:pi-1", title="count to 101")
    for step in range(101):
        answer(site, "pi-1", task["id"], "progress", title=f"step {step}")
    page = open_page(browser, site)
    log_in(page, "master")
    page.goto(f"/admin/taskpool/task/{task['id']}/")
    responses = page.locator("#responses")
    expect(responses.locator("tbody tr")).to_have_count(100)
    expect(responses.locator(".paginator")).to_contain_text("101 responses")
    responses.locator(".paginator a", has_text="2").click()
    expect(page).to_have_url(f"{site.url}/admin/taskpool/task/{task['id']}/?rp=2#responses")
    expect(responses.locator("tbody tr")).to_have_count(1)
    expect(responses.locator("tbody")).to_contain_text("step 100")
    expect(responses.locator(".paginator .this-page")).to_have_text("2")
    page.evaluate("window.notReloaded = true")
    time.sleep(0.5)  # the page's stream is open by now; the answer is what we wait for

    answer(site, "pi-1", task["id"], "done", title="counted")
    expect(responses.locator("tbody")).to_contain_text("counted", timeout=LIVE_WITHIN_MS)
    expect(responses.locator("tbody tr")).to_have_count(2)
    expect(responses.locator(".paginator")).to_contain_text("102 responses")
    expect(page.locator("#executions .taskpool-badge")).to_have_text("done")
    assert page.evaluate("window.notReloaded") is True
    page.context.close()


def test_after_the_server_restarts_the_page_resumes_and_catches_up(browser, running):
    page = open_dashboard(browser, running.site, "boss")
    page.evaluate("window.notReloaded = true")
    sent = number(page, "tasks-sent-today")

    running.stop()
    expect(page.locator("[data-live-status]")).to_have_attribute("data-live-status", "reconnecting")
    # While the server is down, another process appends a task and its failure.
    written_while_down = write_lines(running.site.var_dir, "written while the server was down")
    running.start()

    expect(page.locator("[data-live-status]")).to_have_attribute(
        "data-live-status", "live", timeout=20_000
    )
    expect(metric(page, "tasks-sent-today")).to_have_text(str(sent + 1), timeout=10_000)
    expect(page.locator("#failures tbody tr").first).to_contain_text(
        "written while the server was down"
    )
    assert written_while_down in page.locator("#failures").inner_html()

    # And it is live again.
    task = post_task(running.site, to="device:pi-1", title="after the restart")
    expect(metric(page, "tasks-sent-today")).to_have_text(str(sent + 2), timeout=LIVE_WITHIN_MS)
    assert task["id"]
    assert page.evaluate("window.notReloaded") is True
    page.context.close()


def test_a_pool_admin_and_a_master_see_it_and_plain_staff_are_refused(browser, site):
    for username in ("opsadmin", "master"):
        page = open_dashboard(browser, site, username)
        expect(metric(page, "tasks-sent-today")).to_be_visible()
        page.context.close()

    page = open_page(browser, site)
    log_in(page, "staff")
    expect(page.locator("#content-main").get_by_role("link", name="Dashboard")).to_have_count(0)
    page.goto(URL)
    expect(page.locator("h1")).to_have_text("Permission denied")
    expect(page.locator("#site-name")).to_be_visible()  # in the admin's frame
    expect(page.locator("#refusal")).to_have_text(
        "This page needs the pool role master (or above)."
    )
    expect(page.locator("[data-metric]")).to_have_count(0)
    page.context.close()


def test_once_its_user_logs_out_the_dashboard_says_it_is_no_longer_live(browser, site):
    page = open_dashboard(browser, site, "master")
    sent = number(page, "tasks-sent-today")
    elsewhere = page.context.new_page()  # another tab of the same browser: the same session
    elsewhere.goto("/admin/")
    elsewhere.locator("#logout-form button").click()
    expect(elsewhere.locator("#content h1")).to_have_text("Logged out")

    post_task(site, to="device:pi-1", title="after the logout")  # the stream asks again first
    expect(page.locator("[data-live-status]")).to_have_attribute(
        "data-live-status", "ended", timeout=10_000
    )
    expect(page.locator('[data-live-label="ended"]')).to_be_visible()
    expect(page.locator('[data-live-label="live"]')).to_be_hidden()
    assert number(page, "tasks-sent-today") == sent  # nothing shown past the logout
    page.context.close()


def test_the_admin_index_links_the_dashboard_first_under_the_pool(browser, site):
    page = open_page(browser, site)
    log_in(page, "master")
    pool = page.locator(".app-taskpool")
    expect(pool.locator("th[scope=row] a").first).to_have_text("Dashboard")
    pool.get_by_role("link", name="Dashboard", exact=True).click()
    expect(page).to_have_url(f"{site.url}{URL}")
    page.context.close()


@pytest.fixture(scope="module")
def past_week(running: RunningSite) -> None:
    """The days before today of a generated week (``bench.history``), copied in as day
    files, so the charts have a week's shape to show."""
    from bench.history import write_history

    generated = running.var_dir / "generated"
    write_history(generated, 6000)
    today_file = day_file_name(datetime.now(UTC).date())
    (running.var_dir / "pool").mkdir(exist_ok=True)
    for path in generated.glob("*.jsonl"):
        if path.name != today_file:
            (running.var_dir / "pool" / path.name).write_bytes(path.read_bytes())


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_screenshots_in_each_theme(browser, site, past_week, theme):
    page = open_dashboard(browser, site, "boss", dark=theme == "dark")
    expect(page.locator("#dashboard-hourly svg")).to_have_count(4)
    # The bars take the admin's colours: in the dark theme, its dark link colour.
    fill = page.evaluate(
        "getComputedStyle(document.querySelector('[data-chart=tasks] .taskpool-bar')).fill"
    )
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    if theme == "dark":
        assert background != "rgb(255, 255, 255)"
    else:
        assert background == "rgb(255, 255, 255)"
    assert fill not in ("", "none", "rgb(0, 0, 0)")
    screenshot(page, f"dashboard_{theme}")
    page.context.close()


def test_on_a_phone_the_cards_stack_and_the_charts_fit(browser, site, past_week):
    context = browser.new_context(
        base_url=site.url, viewport={"width": 390, "height": 844}, is_mobile=True
    )
    page = context.new_page()
    log_in(page, "boss")
    page.goto(URL)
    overflow = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 1
    chart = page.locator("#dashboard-hourly svg").first.bounding_box()
    assert chart is not None and chart["width"] <= 390
    screenshot(page, "dashboard_phone")
    context.close()


def today() -> str:
    return datetime.now(UTC).date().isoformat()


def write_lines(var_dir: Path, failure_title: str) -> str:
    """Append a task to pi-1 and pi-1's failure to today's day file, as another process would.

    Returns the failure's id.
    """
    now = time.time()
    task_id, failure_id = new_message_id(), new_message_id()
    ts = format_timestamp(now)
    task = {
        "id": task_id,
        "ts": ts,
        "from": "user:master@example.com",
        "to": "device:pi-1",
        "type": "task",
        "title": "appended by hand",
        "body": "",
        "parent_id": None,
        "meta": {"expires_at": format_timestamp(now + 3600)},
    }
    failure = {
        "id": failure_id,
        "ts": ts,
        "from": "device:pi-1",
        "to": "user:master@example.com",
        "type": "response",
        "title": failure_title,
        "body": "",
        "parent_id": task_id,
        "meta": {"status": "failed"},
    }
    path = var_dir / "pool" / day_file_name(datetime.now(UTC).date())
    with open(path, "ab") as file:
        file.write(encode_line(task) + encode_line(failure))
    return failure_id
