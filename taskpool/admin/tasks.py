"""Tasks in the admin: a day's tasks, a task's thread, sending and cancelling.

The thread shows the task, every response in pool order and one execution
per addressed device, from ``store.task_detail``. Sending goes through the
API's own validation (``forms.SendTaskForm``) and ``store.post_task``;
cancelling through ``store.cancel``. The sender is the logged-in user
(``user:<email>``), as through the API. Master role and above (see ``access``).
"""

from __future__ import annotations

from datetime import date

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
from taskpool.admin.forms import CancelTaskForm, DayFilterForm, SendTaskForm
from taskpool.admin.rows import message_rows, pretty_json
from taskpool.cursors import Cursor
from taskpool.days import day_of, parse_day
from taskpool.exceptions import InvalidCursor, PoolError, TaskClosed, UnknownTask
from taskpool.models import DeviceUser, Task
from taskpool.principals import address_of
from taskpool.stores import get_store


@admin.register(Task)
class TaskAdmin(PoolPagesAdmin):
    role = TASKS_ROLE
    #: Tasks per page of a day's list.
    tasks_per_page = 50
    #: Bytes a page of the list examines at most before it stops short.
    scan_limit = 16 * 1024 * 1024

    def pages(self) -> list[URLPattern]:
        return [
            self.page("", self.task_list_view, "changelist"),
            self.page("add/", self.send_view, "add"),
            self.page("<str:task_id>/", self.thread_view, "thread"),
            self.page("<str:task_id>/cancel/", self.cancel_view, "cancel"),
        ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return self.has_role(request)

    # A day's tasks, newest first -----------------------------------------------

    def task_list_view(self, request: HttpRequest) -> HttpResponse:
        self.require_role(request)
        store = get_store()
        days = store.days()
        try:
            day = parse_day(request.GET["day"]) if request.GET.get("day") else day_of(store.now())
        except ValueError:
            raise Http404(_("That is not a day.")) from None
        filters = DayFilterForm(request.GET)
        where = filters.message_filter(type="task")
        options: dict = {
            "limit": self.tasks_per_page,
            "where": where,
            "scan_limit": self.scan_limit,
        }
        try:
            if request.GET.get("older"):
                options["before"] = Cursor.parse(request.GET["older"])
            elif request.GET.get("newer"):
                options["after"] = Cursor.parse(request.GET["newer"])
            else:
                options["from_end"] = True
            page = store.day_page(day, **options)
        except InvalidCursor as error:
            messages.error(request, error.message)
            return HttpResponseRedirect(f"{request.path}?day={day.isoformat()}")
        earlier = [d for d in days if d < day]
        later = [d for d in days if d > day]
        return self.render(
            request,
            "admin/taskpool/task/change_list.html",
            _("Tasks of %(day)s") % {"day": day.isoformat()},
            day=day,
            filters=filters,
            page=page,
            rows=message_rows(page.entries, request.user)[::-1],
            previous_day=earlier[-1] if earlier else None,
            next_day=later[0] if later else None,
            day_has_file=day in days,
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
        registered = list(
            DeviceUser.objects.filter(validated=True).order_by("id").values_list("id", flat=True)
        )
        task = detail.task
        closed = detail.state.closed_reason(now)
        task_day = _day_of_ts(task["ts"])
        return self.render(
            request,
            "admin/taskpool/task/thread.html",
            task["title"] or task["id"],
            task=task,
            task_meta=pretty_json(task["meta"]),
            responses=message_rows(detail.responses, request.user),
            executions=detail.executions(registered, now),
            closed=closed,
            cancel_form=CancelTaskForm() if closed is None else None,
            day_url=reverse("admin:taskpool_dayfile_day", args=[task_day.isoformat()])
            + f"?q={task['id']}"
            if task_day is not None and can_read_day_files(request.user)
            else None,
        )

    # Sending ---------------------------------------------------------------------

    def send_view(self, request: HttpRequest) -> HttpResponse:
        self.require_role(request)
        if request.method == "POST":
            form = SendTaskForm(request.POST)
            if form.is_valid():
                try:
                    posted = get_store().post_task(
                        sender=address_of(request.user),
                        idempotency_key=form.idempotency(),
                        **form.cleaned_data["task"],
                    )
                except PoolError as error:
                    form.refused(error)
                else:
                    task = posted.message
                    if posted.created:
                        messages.success(request, _("Task sent to %(to)s.") % {"to": task["to"]})
                    else:
                        messages.info(request, _("This form was already sent: here is its task."))
                    return HttpResponseRedirect(
                        reverse("admin:taskpool_task_thread", args=[task["id"]])
                    )
        else:
            form = SendTaskForm(initial={"to": request.GET.get("to", "")})
        return self.render(
            request,
            "admin/taskpool/task/send.html",
            _("Send a task"),
            form=form,
            fieldset=[form[name] for name in ("to", "title", "body", "meta", "ttl", "mode")],
        )

    # Cancelling ------------------------------------------------------------------

    def cancel_view(self, request: HttpRequest, task_id: str) -> HttpResponse:
        self.require_role(request)
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        form = CancelTaskForm(request.POST)
        reason = form.cleaned_data["reason"] if form.is_valid() else ""
        try:
            get_store().cancel(sender=address_of(request.user), task_id=task_id, reason=reason)
        except UnknownTask:
            raise Http404(_("There is no task %(id)s in the pool.") % {"id": task_id}) from None
        except TaskClosed as error:
            messages.error(request, error.message)
        else:
            messages.success(request, _("Task cancelled: it has left every device's pending list."))
        return HttpResponseRedirect(reverse("admin:taskpool_task_thread", args=[task_id]))


def _day_of_ts(ts: str) -> date | None:
    try:
        return parse_day(ts[:10])
    except ValueError:
        return None
