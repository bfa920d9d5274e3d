"""The admin's dashboard, through Django's test client, on every store: its figures for a
known pool, its links, who may see it (the browser tests drive it live in Chromium)."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from taskpool.models import DeviceUser, UserRole
from taskpool.stores import get_store
from tests.support import message

pytestmark = pytest.mark.every_store

URL = "/admin/taskpool/dashboard/"


class Metrics(HTMLParser):
    """The text and link of each element with a ``data-metric``."""

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, str] = {}
        self.links: dict[str, str] = {}
        self._open: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if "data-metric" in attributes:
            self._open.append((attributes["data-metric"], attributes.get("href")))
            if attributes.get("href"):
                self.links[attributes["data-metric"]] = attributes["href"]
            self.values[attributes["data-metric"]] = ""

    def handle_data(self, data):
        if self._open:
            self.values[self._open[-1][0]] += data

    def handle_endtag(self, tag):
        if self._open:
            self._open.pop()


def metrics(response) -> Metrics:
    parser = Metrics()
    parser.feed(response.content.decode())
    parser.values = {name: value.strip() for name, value in parser.values.items()}
    return parser


def staff(username: str, role: str | None) -> Client:
    user = get_user_model().objects.create_user(
        username, email=f"{username}@example.com", password="pw", is_staff=True
    )
    if role is not None:
        UserRole.objects.create(user=user, role=role)
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def known_pool(db):
    """Three validated devices (two heard from), one waiting for approval, one staff left
    unvalidated; tasks ending several ways."""
    for device_id, validated in (("a", True), ("b", True), ("c", True), ("held", False)):
        DeviceUser.objects.create(id=device_id, kind="pi", validated=validated)
    DeviceUser.objects.create(id="new", kind="pi", validated=False, enrolled_at=timezone.now())
    store = get_store()
    store.post_heartbeat(device_id="a")
    send = lambda to: store.post_task(sender="user:ops@example.com", to=to, title="update").message  # noqa: E731
    both = send("device:[a,b]")
    store.post_response(device_id="a", parent_id=both["id"], status="done")
    store.post_response(
        device_id="b", parent_id=both["id"], status="failed", title="disk full", body="at /var"
    )
    rejected = send("device:a")
    store.post_response(device_id="a", parent_id=rejected["id"], status="rejected")
    waiting = send("device:c")
    return {"both": both, "rejected": rejected, "waiting": waiting}


def test_the_dashboard_counts_a_known_pool(known_pool):
    response = staff("boss", "admin").get(URL)
    assert response.status_code == 200
    found = metrics(response).values
    assert found["devices-online"] == "2"
    assert found["devices-never-seen"] == "1"
    assert found["devices-offline"] == "0"
    assert found["devices-waiting"] == "1"
    assert found["tasks-sent-today"] == "3"
    assert found["tasks-sent-7d"] == "3"
    assert found["tasks-done-today"] == "1"
    assert found["tasks-failed-today"] == "1"
    assert found["tasks-rejected-today"] == "1"
    assert found["tasks-pending-today"] == "1"
    assert found["tasks-timed-out-today"] == "0"
    assert found["tasks-expired-7d"] == "0"
    assert found["messages-today"] == "7"
    assert found["open-tasks"] == "1"
    assert found["hourly-tasks-total"] == "3"
    assert found["hourly-failures-total"] == "1"
    assert found["hourly-heartbeats-total"] == "1"
    assert found["daily-answers-total"] == "3"
    # The series counts every response, the server's lines for jobs too: so it is named.
    labels = re.findall(r'class="taskpool-chart-label">([^<]*)<', response.content.decode())
    assert "Responses" in labels and "Answers" not in labels


def test_a_device_invalidated_after_it_joined_is_not_counted_as_waiting(known_pool):
    """As the list the figure opens: staff validate it again, they do not approve it."""
    DeviceUser.objects.create(
        id="joined", kind="pi", validated=False, enrolled_at=timezone.now(),
        token_collected_at=timezone.now(),
    )  # fmt: skip
    client = staff("boss", "admin")
    page = client.get(URL)
    assert metrics(page).values["devices-waiting"] == "1"
    waiting = re.search(
        r'href="([^"]+)"><span [^>]*data-metric="devices-waiting"', page.content.decode()
    )
    listed = client.get(html.unescape(waiting.group(1))).context["cl"].result_list
    assert [device.id for device in listed] == ["new"]


def test_the_latest_failures_link_their_thread_and_device(known_pool):
    page = staff("boss", "admin").get(URL).content.decode()
    failures = page[page.index('id="failures"') :]
    assert f"/admin/taskpool/task/{known_pool['both']['id']}/" in failures
    assert "/admin/taskpool/deviceuser/b/change/" in failures
    assert "disk full" in failures
    assert "at /var" not in failures  # the answer's first line only


def test_each_device_figure_links_to_the_devices_it_counts(known_pool):
    client = staff("boss", "admin")
    page = client.get(URL)
    found = metrics(page)
    tiles = {
        metric: html.unescape(href)
        for href, metric in re.findall(
            r'<a class="taskpool-tile[^"]*" href="([^"]+)"><span [^>]*data-metric="([^"]+)"',
            page.content.decode(),
        )
    }
    for name in ("devices-online", "devices-offline", "devices-never-seen", "devices-waiting"):
        listed = client.get(tiles[name]).context["cl"].result_list
        assert len(listed) == int(found.values[name]), name
    waiting = client.get(tiles["devices-waiting"]).context["cl"].result_list
    assert [device.id for device in waiting] == ["new"]  # not "held", which staff left so


def test_each_task_figure_links_to_the_task_list_filtered_the_same_way(known_pool):
    client = staff("boss", "admin")
    found = metrics(client.get(URL))
    link = urlsplit(found.links["tasks-failed-today"])
    assert link.path == "/admin/taskpool/task/"
    query = parse_qs(link.query)
    assert query["status"] == ["failed"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT00:00:00Z", query["since"][0])
    listed = client.get(found.links["tasks-failed-today"]).content.decode()
    assert known_pool["both"]["id"] in listed
    assert known_pool["rejected"]["id"] not in listed


def test_the_charts_are_drawn_on_the_server(known_pool):
    page = staff("boss", "admin").get(URL).content.decode()
    assert page.count('<svg class="taskpool-bars') == 8  # four series, per hour and per day
    current = re.search(
        r'data-chart="tasks".*?<rect class="taskpool-bar taskpool-bar-current"[^>]*data-value="(\d+)"',
        page,
        re.S,
    )
    assert current is not None and current.group(1) == "3"
    assert "<script src=" in page and "taskpool/live.js" in page
    assert "cdn" not in page.lower()


def test_the_dashboard_listens_to_the_stream_with_the_session(known_pool):
    page = staff("ops", "master").get(URL).content.decode()
    assert 'data-live-stream="/pool/stream?all=1"' in page


def test_a_thread_page_listens_for_its_task(known_pool):
    task_id = known_pool["waiting"]["id"]
    page = staff("ops", "master").get(f"/admin/taskpool/task/{task_id}/").content.decode()
    assert f'data-live-task="{task_id}"' in page
    assert 'data-live="executions"' in page and 'data-live="responses"' in page
    assert "taskpool/live.js" in page


def test_a_master_sees_the_dashboard(known_pool):
    response = staff("ops", "master").get(URL)
    assert response.status_code == 200
    assert metrics(response).values["tasks-sent-today"] == "3"
    # Day files are an admin's: a master's "messages today" is no link to them.
    assert "messages-today" not in metrics(response).links


@pytest.mark.parametrize("role", [None, "user"])
def test_staff_without_a_pool_role_are_refused_in_the_admins_frame(known_pool, role):
    response = staff("clerk", role).get(URL)
    assert response.status_code == 403
    page = response.content.decode()
    assert "This page needs the pool role master" in page
    assert 'id="site-name"' in page  # the admin's header: the page is in its frame
    assert "data-metric" not in page


def test_anonymous_visitors_are_sent_to_the_login(db):
    response = Client().get(URL)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_the_admin_index_lists_the_dashboard_first_under_the_pool(known_pool):
    page = staff("ops", "master").get("/admin/").content.decode()
    pool = page[page.index("app-taskpool") :]
    first_link = re.search(r'<th scope="row"[^>]*>\s*<a href="([^"]+)"', pool)
    assert first_link is not None and first_link.group(1) == URL


def test_an_empty_pool_has_a_dashboard_of_zeros(db):
    found = metrics(staff("boss", "admin").get(URL)).values
    assert found["tasks-sent-today"] == "0"
    assert found["devices-online"] == "0"
    assert found["messages-today"] == "0"


def test_devices_gone_quiet_are_offline_the_latest_first(known_pool):
    from datetime import timedelta

    from django.utils import timezone

    now = timezone.now()
    DeviceUser.objects.filter(pk="c").update(last_seen=now - timedelta(hours=1))
    DeviceUser.objects.create(id="d", kind="pi", validated=True, last_seen=now - timedelta(days=2))
    response = staff("boss", "admin").get(URL)
    found = metrics(response).values
    assert found["devices-offline"] == "2"
    assert found["devices-never-seen"] == "0"
    page = response.content.decode()
    listed = page[page.index('id="recently-offline"') :]
    assert listed.index("/deviceuser/c/change/") < listed.index("/deviceuser/d/change/")


def old_heartbeat(at: float, body: str = "") -> dict:
    """A heartbeat of device ``a`` at ``at``, as another process would have written it."""
    return message(kind="heartbeat", sender="device:a", to="backend", ts=at, body=body)


def test_days_before_the_week_are_charted_from_their_summaries(known_pool, other_process):
    from taskpool.days import day_of

    store = get_store()
    long_ago = store.now() - 20 * 86400
    day = day_of(long_ago).isoformat()
    other_process(*(old_heartbeat(long_ago) for _ in range(2)))
    page = staff("boss", "admin").get(URL).content.decode()
    daily = page[page.index('id="dashboard-daily"') :]
    assert re.search(rf'data-key="{day}" data-value="2"', daily)  # its heartbeats
    # The week's figures are the known pool's: an old day changes none of them.
    assert metrics(staff("ops", "master").get(URL)).values["tasks-sent-7d"] == "3"


@pytest.mark.day_files_only
def test_an_old_day_not_yet_counted_whole_is_unknown_not_a_partial_count(
    known_pool, other_process, monkeypatch
):
    """A first view of a long history counts part of it: the rest is said to be uncounted,
    never shown as the part counted so far."""
    from taskpool.admin.dashboard import DashboardAdmin
    from taskpool.days import day_of

    store = get_store()
    long_ago = store.now() - 20 * 86400
    day = day_of(long_ago).isoformat()
    other_process(*(old_heartbeat(long_ago, body="x" * 200) for _ in range(40)))
    monkeypatch.setattr(DashboardAdmin, "count_limit", 1)  # one chunk a view
    monkeypatch.setattr("taskpool.stores.jsonl.day_reading.FIRST_CHUNK_BYTES", 1000)
    monkeypatch.setattr("taskpool.stores.jsonl.day_reading.MAX_CHUNK_BYTES", 1000)
    boss = staff("boss", "admin")
    first = boss.get(URL)
    found = metrics(first).values
    assert found["daily-uncounted"] == "1"
    daily = first.content.decode()[first.content.decode().index('id="dashboard-daily"') :]
    assert not re.search(rf'data-key="{day}" data-value="\d', daily)  # no partial bar
    assert found["daily-heartbeats-total"] == "1"  # the week's one heartbeat alone
    for _ in range(30):
        page = boss.get(URL)
        if "daily-uncounted" not in metrics(page).values:
            break
    else:
        raise AssertionError("the day was never counted whole")
    daily = page.content.decode()[page.content.decode().index('id="dashboard-daily"') :]
    assert re.search(rf'data-key="{day}" data-value="40"', daily)
    assert metrics(page).values["daily-heartbeats-total"] == "41"


def test_the_per_day_chart_shows_the_latest_days_of_a_long_history(
    known_pool, other_process, monkeypatch
):
    """Kept for years, a chart of every day would grow the page by four bars a day."""
    from taskpool.admin.dashboard import DashboardAdmin
    from taskpool.days import day_of

    store = get_store()
    ages = (40, 30, 20)
    other_process(*(old_heartbeat(store.now() - age * 86400) for age in ages))
    week_days = len(store.overview([], failures=0).task_days)
    monkeypatch.setattr(DashboardAdmin, "daily_days", week_days + 2)
    page = staff("boss", "admin").get(URL).content.decode()
    daily = page[page.index('id="dashboard-daily"') :]
    keys = {age: day_of(store.now() - age * 86400).isoformat() for age in ages}
    assert f'data-key="{keys[40]}"' not in daily  # the oldest day, past the chart's days
    assert f'data-key="{keys[30]}"' in daily and f'data-key="{keys[20]}"' in daily
    assert f"at most the last {week_days + 2} days" in page


def test_figures_are_plain_digits_in_any_locale(db, settings):
    """Scripts read the figures: "1.200" (German) or "1 200" (French) would not parse."""
    settings.LANGUAGE_CODE = "de"
    settings.USE_THOUSAND_SEPARATOR = True
    store = get_store()
    for _ in range(1200):
        store.post_heartbeat(device_id="a")
    response = staff("boss", "admin").get(URL, HTTP_ACCEPT_LANGUAGE="de")
    found = metrics(response).values
    assert found["messages-today"] == "1200"
    assert found["hourly-heartbeats-total"] == "1200"
    assert found["daily-heartbeats-total"] == "1200"
    page = response.content.decode()
    values = re.findall(r'data-metric="[^"]+" data-value="([^"]*)"', page)
    assert values and all(value.isdigit() for value in values), values
    assert "Heute" in page  # the page itself is still German
