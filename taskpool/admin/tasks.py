"""Tasks in the admin: recent tasks, a task's thread, sending and cancelling.

The thread shows the task, its responses in pool order and one execution
per addressed device, from ``store.task_detail``. Sending goes through the
API's own validation (``forms.SendTaskForm``) and ``store.post_task``;
cancelling through ``store.cancel``. The sender is the logged-in user
(``user:<email>``), as through the API. Master role and above (see ``access``).
"""

from __future__ import annotations

import math
import time
from datetime import date, timedelta
from typing import Any

from django.contrib import admin, messages
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
)
from django.urls import URLPattern, reverse
from django.utils.translation import gettext as _

from taskpool.admin.access import TASKS_ROLE, PoolPagesAdmin, can_read_day_files
from taskpool.admin.executions import SHOWN_PER_STATUS, DeviceLinks, status_groups
from taskpool.admin.forms import JOB_FIELDS, CancelTaskForm, SendTaskForm
from taskpool.admin.paging import paged_part
from taskpool.admin.rows import message_rows, pretty_json, response_status_counts
from taskpool.api.errors import field_errors
from taskpool.api.queries import TaskListQuerySerializer, task_query
from taskpool.conf import pool_settings
from taskpool.days import day_of, parse_day
from taskpool.exceptions import (
    InvalidCursor,
    PoolError,
    StoreUnavailable,
    TaskClosed,
    UnknownTask,
)
from taskpool.executions import EXECUTION_STATUSES, registered_places
from taskpool.fleet import validated_device_ids
from taskpool.jobs import JOB_KEYS
from taskpool.models import Task
from taskpool.principals import address_of
from taskpool.stores import get_store
from taskpool.stores.base import TaskQuery
from taskpool.stores.validation import TASK_META_RESERVED

#: The session's note of the task its user sent last from the form (``SendTaskForm.repeats``).
LAST_SENT_KEY = "taskpool-last-sent"


@admin.register(Task)
class TaskAdmin(PoolPagesAdmin):
    role = TASKS_ROLE
    #: Tasks per page of the list (``?limit=`` overrides it, as in the API).
    tasks_per_page = 50
    #: Executions per page of a task's thread (``?p=`` pages), as the admin's changelists.
    executions_per_page = 100
    #: Responses per page of a task's thread (``?rp=`` pages): a broadcast has several a device.
    responses_per_page = 100

    def pages(self) -> list[URLPattern]:
        return [
            self.page("", self.task_list_view, "changelist"),
            self.page("add/", self.send_view, "add"),
            self.page("<str:task_id>/", self.thread_view, "thread"),
            self.page("<str:task_id>/cancel/", self.cancel_view, "cancel"),
        ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return self.has_role(request)

    # Recent tasks, newest first -------------------------------------------------

    def task_list_view(self, request: HttpRequest) -> HttpResponse:
        """The tasks of the ``TASK_TTL`` horizon, newest first, filtered as ``GET /pool/tasks`` is."""
        self.require_role(request)
        filters = TaskListQuerySerializer(data=request.GET)
        if filters.is_valid():
            filter_errors: dict[str, list[str]] = {}
            query, before = task_query(filters.validated_data), filters.validated_data.get("before")
            limit = (
                filters.validated_data["limit"] if "limit" in request.GET else self.tasks_per_page
            )
        else:
            filter_errors = field_errors(filters.errors)
            query, before, limit = TaskQuery(), None, self.tasks_per_page
        store = get_store()
        registered = validated_device_ids()
        try:
            page = store.recent_tasks(
                query, before=before, limit=limit, registered_devices=registered
            )
        except InvalidCursor as error:  # an edited or stale link: the first page, and why
            filter_errors = {**filter_errors, "before": [error.message]}
            before = None
            page = store.recent_tasks(query, limit=limit, registered_devices=registered)
        # Which device has which status: asked of the store only where a task has several.
        mixed = [summary.task["id"] for summary in page.results if len(summary.statuses) > 1]
        counts = (
            store.task_status_counts(mixed, registered, shown=SHOWN_PER_STATUS) if mixed else {}
        )
        groups = [
            status_groups(summary, counts.get(summary.task["id"])) for summary in page.results
        ]
        links = DeviceLinks(
            self.admin_site,
            request,
            (device.id for row in groups for group in row for device in group.devices),
        )
        rows = message_rows(
            [summary.task for summary in page.results],
            request.user,
            current_app=self.admin_site.name,
        )
        return self.render(
            request,
            "admin/taskpool/task/change_list.html",
            _("Tasks"),
            rows=[
                (row, links.groups(row_groups))
                for row, row_groups in zip(rows, groups, strict=True)
            ],
            page=page,
            filter_errors=filter_errors,
            status_choices=EXECUTION_STATUSES,
            selected_statuses=request.GET.getlist("status"),
            date_choices=date_choices(request, day_of(store.now())),
            has_filters=any(
                request.GET.get(name) for name in ("status", "to", "from", "q", "since", "until")
            ),
            is_first_page=before is None,
        )

    # A task's thread -------------------------------------------------------------

    def thread_view(self, request: HttpRequest, task_id: str) -> HttpResponse:
        self.require_role(request)
        store = get_store()
        try:
            detail = store.task_detail(task_id)
        except UnknownTask:
            raise Http404(_("There is no task %(id)s in the pool.") % {"id": task_id}) from None
        now = store.now()
        registered = validated_device_ids()
        task = detail.task
        closed = detail.state.closed_reason(now)
        task_day = _day_of_ts(task["ts"])
        job = [(key, task["meta"][key]) for key in JOB_KEYS if key in task["meta"]]
        # A page of each: a broadcast has a row per device of the fleet, and their answers.
        executions_part = paged_part(
            request,
            detail.state.addressed(registered),
            self.executions_per_page,
            "p",
            "executions",
        )
        executions = [detail.state.execution(device_id, now) for device_id in executions_part.page]
        responses_part = paged_part(
            request, detail.responses, self.responses_per_page, "rp", "responses"
        )
        responses = message_rows(
            list(responses_part.page), request.user, current_app=self.admin_site.name
        )
        links = DeviceLinks(
            self.admin_site,
            request,
            [e["device"] for e in executions] + [row.sender[7:] for row in responses],
        )
        return self.render(
            request,
            "admin/taskpool/task/thread.html",
            task["title"] or task["id"],
            task=task,
            # What the sender chose; what the server wrote (expiry, mode, job options,
            # the idempotency key) is shown in rows of its own.
            task_meta=pretty_json(
                {k: v for k, v in task["meta"].items() if k not in TASK_META_RESERVED}
            ),
            idempotency_key=task["meta"].get("idempotency_key"),
            responses=[
                (row, links(row.sender[7:]) if row.sender.startswith("device:") else None)
                for row in responses
            ],
            responses_page=responses_part.page,
            responses_links=responses_part.links,
            responses_count=responses_part.count,
            response_counts=response_status_counts(detail.responses)
            if responses_part.links
            else [],
            executions=[(execution, links(execution["device"])) for execution in executions],
            executions_page=executions_part.page,
            executions_links=executions_part.links,
            executions_count=executions_part.count,
            status_counts=[
                (counted.status, counted.total)
                for counted in detail.state.status_counts(
                    registered_places(registered), now, shown=0
                )
            ]
            if executions_part.links
            else [],
            job=[
                (key, value if isinstance(value, str) else pretty_json(value)) for key, value in job
            ],
            with_attempts="retries" in task["meta"],
            aborted=detail.state.aborted,
            closed=closed,
            cancel_form=CancelTaskForm() if closed is None else None,
            day_url=reverse(
                "admin:taskpool_dayfile_day",
                args=[task_day.isoformat()],
                current_app=self.admin_site.name,
            )
            + f"?q={task['id']}"
            if task_day is not None and can_read_day_files(request.user)
            else None,
            # New answers and execution statuses appear as they come (``static/taskpool/live.js``).
            stream_url=reverse("taskpool:stream") + "?all=1",
        )

    # Sending ---------------------------------------------------------------------

    def send_view(self, request: HttpRequest) -> HttpResponse:
        self.require_role(request)
        if request.method != "POST":
            return self._send_page(request, SendTaskForm(initial={"to": request.GET.get("to", "")}))
        form = SendTaskForm(request.POST)
        if not form.is_valid():
            return self._send_page(request, form)
        last_sent = request.session.get(LAST_SENT_KEY)
        if form.repeats(last_sent, time.time()):
            # Back after sending, and Send again: held until the person says it is meant.
            repeated = self._thread_url(last_sent["task_id"])  # type: ignore[index]
            return self._send_page(request, form, repeated_url=repeated)
        try:
            posted = get_store().post_task(
                sender=address_of(request.user),
                idempotency_key=form.idempotency(),
                **form.cleaned_data["task"],
            )
        except PoolError as error:
            form.refused(error)
            return self._send_page(request, form)
        task = posted.message
        request.session[LAST_SENT_KEY] = {
            "fingerprint": form.fingerprint(),
            "key": form.idempotency(),
            "task_id": task["id"],
            "at": time.time(),
        }
        if posted.created:
            messages.success(request, _("Task sent to %(to)s.") % {"to": task["to"]})
        else:
            messages.info(request, _("This form was already sent: here is its task."))
        return HttpResponseRedirect(self._thread_url(task["id"]))

    def _thread_url(self, task_id: str) -> str:
        """A task's thread, on the admin site that drew this page."""
        return reverse(
            "admin:taskpool_task_thread", args=[task_id], current_app=self.admin_site.name
        )

    def _send_page(self, request: HttpRequest, form: SendTaskForm, **context: Any) -> HttpResponse:
        return self.render(
            request,
            "admin/taskpool/task/send.html",
            _("Send a task"),
            form=form,
            fieldset=[form[name] for name in ("to", "title", "body", "meta", "ttl", "mode")],
            job_fieldset=[form[name] for name in (*JOB_FIELDS, "not_before")],
            **context,
        )

    # Cancelling ------------------------------------------------------------------

    def cancel_view(self, request: HttpRequest, task_id: str) -> HttpResponse:
        self.require_role(request)
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        form = CancelTaskForm(request.POST)
        if not form.is_valid():  # a reason the form's own limits refuse: cancel nothing
            for errors in form.errors.values():
                for error in errors:
                    messages.error(request, str(error))
            return HttpResponseRedirect(self._thread_url(task_id))
        reason = form.cleaned_data["reason"]
        try:
            get_store().cancel(sender=address_of(request.user), task_id=task_id, reason=reason)
        except UnknownTask:
            raise Http404(_("There is no task %(id)s in the pool.") % {"id": task_id}) from None
        except (TaskClosed, StoreUnavailable) as error:
            messages.error(request, error.message)
        else:
            messages.success(request, _("Task cancelled: it has left every device's pending list."))
        return HttpResponseRedirect(self._thread_url(task_id))


def date_choices(request: HttpRequest, today: date) -> list[tuple[str, str, bool]]:
    """The list's date filter: (label, query string, chosen) for any date and each day of
    the ``TASK_TTL`` horizon, newest first, as ``since`` and ``until``."""
    query = request.GET.copy()
    for name in ("since", "until", "before"):
        query.pop(name, None)
    choices = [(_("Any date"), f"?{query.urlencode()}", not request.GET.get("since"))]
    for back in range(math.ceil(pool_settings.TASK_TTL.total_seconds() / 86400) + 1):
        day = today - timedelta(days=back)
        label = _("Today") if back == 0 else _("Yesterday") if back == 1 else day.isoformat()
        since, until = f"{day.isoformat()}T00:00:00Z", f"{day.isoformat()}T23:59:59Z"
        chosen = query.copy()
        chosen["since"], chosen["until"] = since, until
        selected = request.GET.get("since") == since and request.GET.get("until") == until
        choices.append((label, f"?{chosen.urlencode()}", selected))
    return choices


def _day_of_ts(ts: str) -> date | None:
    try:
        return parse_day(ts[:10])
    except ValueError:
        return None
