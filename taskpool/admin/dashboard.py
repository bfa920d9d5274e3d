"""The dashboard: the fleet at a glance, the pool's front page in the admin.

Devices by presence, tasks of today and of the week by status, the latest
failures, activity per hour over the week and per day over the retained
history, and the store's own figures. Every figure comes from what the store
keeps counted (``BaseStore.overview``, ``figures``, ``device_activity`` and,
for days older than the week, ``day_summaries``), never from reading the
week's messages, so the page costs about the same on a pool of a million
lines as on an empty one. The page keeps itself up to date from the pool's
stream (``static/taskpool/live.js``). Master role and above, as the tasks.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import urlencode

from django.contrib import admin
from django.contrib.admin.utils import quote
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from taskpool.admin.access import TASKS_ROLE, PoolPagesAdmin, can_read_day_files
from taskpool.admin.charts import bar_chart
from taskpool.fleet import presence, validated_device_ids
from taskpool.models import Dashboard, DeviceUser
from taskpool.stores import get_store
from taskpool.stores.overview import (
    Failure,
    HourActivity,
    PoolOverview,
)

#: The statuses the task figures show, in this order, and how they are named;
#: ``retrying`` and ``scheduled`` (jobs) only when some task has them.
OUTCOMES = (
    ("pending", gettext_lazy("still pending")),
    ("claimed", gettext_lazy("claimed")),
    ("progress", gettext_lazy("in progress")),
    ("done", gettext_lazy("done")),
    ("failed", gettext_lazy("failed")),
    ("rejected", gettext_lazy("rejected")),
    ("timed_out", gettext_lazy("timed out")),
    ("cancelled", gettext_lazy("cancelled")),
    ("expired", gettext_lazy("expired")),
    ("retrying", gettext_lazy("retrying")),
    ("scheduled", gettext_lazy("scheduled")),
)
_SHOWN_WHEN_ZERO = {"pending", "claimed", "progress", "done", "failed", "rejected"} | {
    "timed_out",
    "cancelled",
    "expired",
}
#: The hourly series, as (attribute of ``HourActivity``, metric name, label).
SERIES = (
    ("tasks", "tasks", gettext_lazy("tasks sent")),
    # Every response: the devices' answers, cancels, and the server's own lines for jobs.
    ("answers", "answers", gettext_lazy("responses")),
    ("failures", "failures", gettext_lazy("failures")),
    ("heartbeats", "heartbeats", gettext_lazy("heartbeats")),
)


@dataclass(frozen=True, slots=True)
class Outcome:
    """One row of the task figures: a status, today's and the week's count, with links."""

    status: str
    label: str
    today: int
    week: int
    today_url: str
    week_url: str

    @property
    def metric(self) -> str:
        return self.status.replace("_", "-")


@dataclass(frozen=True, slots=True)
class FailureRow:
    failure: Failure
    task_title: str
    thread_url: str
    device_url: str | None
    at: datetime | None


@dataclass(frozen=True, slots=True)
class OfflineDevice:
    id: str
    kind: str
    last_seen: datetime
    url: str


@admin.register(Dashboard)
class DashboardAdmin(PoolPagesAdmin):
    role = TASKS_ROLE
    #: Devices listed under "went offline most recently".
    recently_offline = 5
    #: Failures listed.
    failures_shown = 10
    #: At most this many bytes of older day files are counted per view (day files only):
    #: a first view of a long history shows what it has counted so far.
    count_limit = 16 * 1024 * 1024
    #: Days in the per-day chart, the latest (a site may keep years: each day is four bars).
    daily_days = 366

    def pages(self) -> list[URLPattern]:
        return [self.page("", self.dashboard_view, "changelist")]

    def dashboard_view(self, request: HttpRequest) -> HttpResponse:
        self.require_role(request)
        store = get_store()
        registered = validated_device_ids()
        overview = store.overview(registered, failures=self.failures_shown)
        figures = store.figures()
        now = datetime.fromtimestamp(store.now(), UTC)
        today = now.date()
        hours = overview.hours
        today_hours = [hour for hour in hours if hour.hour[:10] == today.isoformat()]
        oldest = overview.oldest_open
        oldest_at = _moment(oldest["ts"]) if oldest else None
        return self.render(
            request,
            "admin/taskpool/dashboard.html",
            _("Dashboard"),
            now=now,
            devices=self._devices(now),
            outcomes=_outcomes(overview, today, self.admin_site.name),
            sent_today=overview.task_days[-1].sent if overview.task_days else 0,
            sent_week=sum(day.sent for day in overview.task_days),
            sent_today_url=_task_list(self.admin_site.name, since=today),
            sent_week_url=_task_list(
                self.admin_site.name,
                since=overview.task_days[0].day if overview.task_days else today,
            ),
            week_days=len(overview.task_days),
            failures=self._failures(request, overview),
            hourly=[
                bar_chart(
                    metric,
                    str(label),
                    [(hour.hour.replace("T", " ") + ":00", getattr(hour, name)) for hour in hours],
                    current_key=hours[-1].hour.replace("T", " ") + ":00" if hours else None,
                    unit=" UTC",
                )
                for name, metric, label in SERIES
            ],
            **self._daily(store, overview, today),
            messages_today=sum(hour.messages for hour in today_hours),
            stored_bytes=figures.stored_bytes,
            stored_rows=figures.stored_rows,
            index_lag=figures.index_lag_bytes,
            open_tasks=figures.open_tasks,
            oldest=oldest,
            oldest_at=oldest_at,
            oldest_age=int((now - oldest_at).total_seconds()) if oldest_at else None,
            oldest_url=reverse(
                "admin:taskpool_task_thread", args=[oldest["id"]], current_app=self.admin_site.name
            )
            if oldest
            else None,
            today_day_url=reverse(
                "admin:taskpool_dayfile_day",
                args=[today.isoformat()],
                current_app=self.admin_site.name,
            )
            if can_read_day_files(request.user)
            else None,
            stream_url=reverse("taskpool:stream") + "?all=1",
            can_view_devices=self._can_view_devices(request),
        )

    def _can_view_devices(self, request: HttpRequest) -> bool:
        device_admin = self.admin_site._registry.get(DeviceUser)
        return device_admin is not None and device_admin.has_view_permission(request)

    def _devices(self, now: datetime) -> dict[str, Any]:
        devices = list(
            DeviceUser.objects.only(
                "id", "kind", "validated", "last_seen", "enrolled_at", "token_collected_at"
            )
        )
        validated = [device for device in devices if device.validated]
        seen = presence(validated)
        online = [device for device in validated if seen[device.id][1]]
        never = [device for device in validated if seen[device.id][0] is None]
        # Offline: heard from once, not lately; the latest heard from first.
        last_seen = {
            device.id: moment
            for device in validated
            if (moment := seen[device.id][0]) is not None and not seen[device.id][1]
        }
        offline = sorted(
            (device for device in validated if device.id in last_seen),
            key=lambda device: last_seen[device.id],
            reverse=True,
        )
        changelist = reverse(
            "admin:taskpool_deviceuser_changelist", current_app=self.admin_site.name
        )
        return {
            "online": len(online),
            "offline": len(offline),
            "never_seen": len(never),
            # As the list the number opens counts them: not a device invalidated since.
            "waiting": sum(1 for device in devices if device.awaiting_approval),
            "total": len(devices),
            "online_url": f"{changelist}?validated__exact=1&online=yes",
            "offline_url": f"{changelist}?validated__exact=1&online=no",
            "never_seen_url": f"{changelist}?validated__exact=1&online=never",
            "waiting_url": f"{changelist}?enrollment=waiting",
            "all_url": changelist,
            "recently_offline": [
                OfflineDevice(
                    device.id,
                    device.kind,
                    last_seen[device.id],
                    reverse(
                        "admin:taskpool_deviceuser_change",
                        args=[quote(device.id)],
                        current_app=self.admin_site.name,
                    ),
                )
                for device in offline[: self.recently_offline]
            ],
        }

    def _failures(self, request: HttpRequest, overview: PoolOverview) -> list[FailureRow]:
        store = get_store()
        can_see_devices = self._can_view_devices(request)
        rows = []
        for failure in overview.failures:
            task = store.find_task(failure.task_id) if failure.task_id else None
            rows.append(
                FailureRow(
                    failure=failure,
                    task_title=(task["title"] if task else "") or failure.task_id,
                    thread_url=reverse(
                        "admin:taskpool_task_thread",
                        args=[failure.task_id],
                        current_app=self.admin_site.name,
                    )
                    if failure.task_id
                    else "",
                    device_url=reverse(
                        "admin:taskpool_deviceuser_change",
                        args=[quote(failure.device_id)],
                        current_app=self.admin_site.name,
                    )
                    if can_see_devices and failure.device_id
                    else None,
                    at=_moment(failure.ts),
                )
            )
        return rows

    def _daily(self, store: Any, overview: PoolOverview, today: date) -> dict[str, Any]:
        """Per day over the retained history (``daily``): the week from the hours, older days
        from their summaries (no failures counted there).

        An older day not yet counted whole (``count_limit`` reached) is unknown, not the
        part counted so far; ``uncounted_days`` says how many there are.
        """
        by_day: dict[str, list[HourActivity]] = defaultdict(list)
        for hour in overview.hours:
            by_day[hour.hour[:10]].append(hour)
        week = {day.day for day in overview.task_days}
        older = [day for day in store.days() if day < min(week, default=today)]
        older = older[max(len(older) - max(self.daily_days - len(week), 0), 0) :]
        summaries = {
            summary.day: summary
            for summary in store.day_summaries(older, count_limit=self.count_limit)
        }
        points: dict[str, list[tuple[str, int | None]]] = {name: [] for name, _m, _l in SERIES}
        uncounted = 0
        for day in [*older, *sorted(week)]:
            key = day.isoformat()
            if day in week:
                for name, _metric, _label in SERIES:
                    points[name].append((key, sum(getattr(h, name) for h in by_day[key])))
                continue
            summary = summaries.get(day)
            if summary is not None and summary.counted < summary.size:
                uncounted += 1
                for name, _metric, _label in SERIES:
                    points[name].append((key, None))
                continue
            types = summary.types if summary is not None else {}
            points["tasks"].append((key, types.get("task", 0)))
            points["answers"].append((key, types.get("response", 0)))
            points["failures"].append((key, None))
            points["heartbeats"].append((key, types.get("heartbeat", 0)))
        return {
            "daily": [
                bar_chart(metric, str(label), points[name], current_key=today.isoformat())
                for name, metric, label in SERIES
            ],
            "uncounted_days": uncounted,
            "daily_days": self.daily_days,
        }


def _outcomes(overview: PoolOverview, today: date, current_app: str) -> list[Outcome]:
    days = overview.task_days
    first = days[0].day if days else today
    rows = []
    for status, label in OUTCOMES:
        week = sum(day.statuses.get(status, 0) for day in days)
        today_count = days[-1].statuses.get(status, 0) if days else 0
        if not week and status not in _SHOWN_WHEN_ZERO:
            continue
        rows.append(
            Outcome(
                status=status,
                label=str(label),
                today=today_count,
                week=week,
                today_url=_task_list(current_app, since=today, status=status),
                week_url=_task_list(current_app, since=first, status=status),
            )
        )
    return rows


def _task_list(current_app: str, *, since: date, status: str | None = None) -> str:
    """The task list (of the admin site named ``current_app``) filtered to tasks sent since
    the start of ``since`` (and with ``status``)."""
    query = {"since": f"{since.isoformat()}T00:00:00Z"}
    if status is not None:
        query["status"] = status
    changelist = reverse("admin:taskpool_task_changelist", current_app=current_app)
    return f"{changelist}?{urlencode(query)}"


def _moment(ts: str) -> datetime | None:
    try:
        return datetime.fromisoformat(ts)
    except ValueError:
        return None
