"""Day files in the admin: every file with its counts, a day's messages, one message, the raw file.

A day page never loads the day: it asks the store for one page of messages
from a cursor (forward, or backward for "previous" and "last"), and a
filter that matches little examines at most ``scan_limit`` bytes per page.
Pages are linked by cursor, so the first page of a million-line day costs
what the first page of a ten-line day does. Admin role only (see ``access``).
"""

from __future__ import annotations

from datetime import date
from typing import Any

from django.contrib import admin, messages
from django.core.paginator import Paginator
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    StreamingHttpResponse,
)
from django.urls import URLPattern, reverse
from django.utils.translation import gettext as _

from taskpool.admin.access import DAY_FILES_ROLE, PoolPagesAdmin
from taskpool.admin.downloads import download
from taskpool.admin.forms import DayFilterForm
from taskpool.admin.rows import message_rows, pretty_json, thread_id_of
from taskpool.archive import DayArchive, archived_day, configured_archive
from taskpool.days import day_file_name, parse_day
from taskpool.exceptions import (
    ArchivedDayUnreadable,
    DayFileMissing,
    InvalidCursor,
    InvalidMessage,
)
from taskpool.message_filter import MessageFilter
from taskpool.messages import MESSAGE_TYPES, RESPONSE_STATUSES
from taskpool.models import DayFile
from taskpool.stores import get_store
from taskpool.stores.base import DayPage

#: Query parameters that say where a page is, dropped when a filter changes.
PAGING_PARAMETERS = ("after", "before", "last")


@admin.register(DayFile)
class DayFileAdmin(PoolPagesAdmin):
    role = DAY_FILES_ROLE
    #: Day files per page of the list.
    days_per_page = 30
    #: Messages per page of a day.
    messages_per_page = 50
    #: Bytes a filtered page examines at most before it stops short.
    scan_limit = 16 * 1024 * 1024
    #: New bytes the list counts at most per view; the rest is counted on the next views.
    count_limit = 64 * 1024 * 1024

    def pages(self) -> list[URLPattern]:
        return [
            self.page("", self.day_list_view, "changelist"),
            self.page("<str:day>/", self.day_view, "day"),
            self.page("<str:day>/raw/", self.raw_view, "raw"),
            self.page("<str:day>/<str:cursor>/", self.message_view, "message"),
        ]

    # The list of day files ------------------------------------------------

    def day_list_view(self, request: HttpRequest) -> HttpResponse:
        self.require_role(request)
        store = get_store()
        live = store.days()
        archive = configured_archive()
        archived = [day for day in archive.days() if day not in live] if archive else []
        days = sorted([*live, *archived], reverse=True)
        paginator = Paginator(days, self.days_per_page)
        page = paginator.get_page(request.GET.get("p"))
        shown = list(page.object_list)
        in_archive = set(archived)
        summaries = self._summaries(request, store, [day for day in shown if day not in in_archive])
        if archive is not None:
            summaries += self._archived_summaries(
                request, archive, [day for day in shown if day in in_archive]
            )
        summaries.sort(key=lambda summary: summary.day, reverse=True)
        known = list(MESSAGE_TYPES)
        others = sorted({kind for s in summaries for kind in s.types if kind not in known})
        columns = known + others
        rows = [
            {
                "summary": summary,
                "counts": [summary.types.get(kind, 0) for kind in columns],
                "archived": summary.day in in_archive,
            }
            for summary in summaries
        ]
        return self.render(
            request,
            "admin/taskpool/dayfile/change_list.html",
            _("Day files"),
            rows=rows,
            columns=columns,
            page_obj=page,
            page_range=paginator.get_elided_page_range(page.number, on_each_side=2, on_ends=1),
            day_count=len(days),
            counting=not all(summary.complete for summary in summaries),
            day_files=store.supports_day_files,
        )

    def _summaries(self, request: HttpRequest, store: Any, days: list[date]) -> list[Any]:
        """The days' summaries; a day file that cannot be read is named above the list."""
        try:
            return list(store.day_summaries(days, count_limit=self.count_limit))
        except DayFileMissing:
            readable = []
            for day in days:  # which: count_limit=0 reads none of them through
                try:
                    store.day_summaries([day], count_limit=0)
                except DayFileMissing as error:
                    messages.error(request, error.message)
                else:
                    readable.append(day)
            return list(store.day_summaries(readable, count_limit=self.count_limit))

    def _archived_summaries(
        self, request: HttpRequest, archive: Any, days: list[date]
    ) -> list[Any]:
        """The archived days' summaries; one whose file cannot be read is named above the list."""
        found = []
        for day in days:
            try:
                found += archive.day_summaries([day])
            except ArchivedDayUnreadable as error:
                messages.error(request, error.message)
        return found

    # One day --------------------------------------------------------------

    def day_view(self, request: HttpRequest, day: str) -> HttpResponse:
        self.require_role(request)
        the_day, source = self._existing_day(day)
        filters = DayFilterForm(request.GET)
        where = filters.message_filter()
        try:
            page = self._page(request, source, the_day, where)
        except InvalidCursor as error:
            messages.error(request, error.message)
            query = request.GET.copy()
            for name in PAGING_PARAMETERS:
                query.pop(name, None)
            return HttpResponseRedirect(f"{request.path}?{query.urlencode()}")
        return self.render(
            request,
            "admin/taskpool/dayfile/day.html",
            _("Messages of %(day)s") % {"day": the_day.isoformat()},
            day=the_day,
            file_name=day_file_name(the_day),
            archived=source is not get_store(),
            filters=filters,
            where=where,
            page=page,
            rows=message_rows(page.entries, request.user, current_app=self.admin_site.name),
            short_page=len(page.entries) < self.messages_per_page and not page.at_end,
            type_choices=MESSAGE_TYPES,
            status_choices=RESPONSE_STATUSES,
            selected_type=request.GET.get("type", ""),
            selected_status=request.GET.get("status", ""),
            has_filters=not where.is_empty,
        )

    def _page(self, request: HttpRequest, source: Any, day: date, where: MessageFilter) -> DayPage:
        query = request.GET
        options: dict[str, Any] = {
            "limit": self.messages_per_page,
            "where": where,
            "scan_limit": self.scan_limit,
        }
        if query.get("after"):
            options["after"] = query["after"]
        elif query.get("before"):
            options["before"] = query["before"]
        elif query.get("last"):
            options["from_end"] = True
        return source.day_page(day, **options)

    # One message -----------------------------------------------------------

    def message_view(self, request: HttpRequest, day: str, cursor: str) -> HttpResponse:
        self.require_role(request)
        the_day, source = self._existing_day(day)
        try:
            if isinstance(source, DayArchive):
                message = source.message_on(the_day, cursor)
            else:
                message = source.message_at(cursor, day=the_day)
        except (InvalidCursor, InvalidMessage):
            raise Http404(_("No message ends at %(cursor)s.") % {"cursor": cursor}) from None
        thread_id = thread_id_of(message)
        return self.render(
            request,
            "admin/taskpool/dayfile/message.html",
            _("Message %(id)s") % {"id": message["id"]},
            day=the_day,
            cursor=cursor,
            day_files=get_store().supports_day_files,
            message=message,
            message_json=pretty_json(message),
            thread_url=reverse(
                "admin:taskpool_task_thread", args=[thread_id], current_app=self.admin_site.name
            )
            if thread_id
            else None,
            day_url=reverse(
                "admin:taskpool_dayfile_day",
                args=[the_day.isoformat()],
                current_app=self.admin_site.name,
            ),
        )

    # The raw file ------------------------------------------------------------

    def raw_view(self, request: HttpRequest, day: str) -> StreamingHttpResponse:
        self.require_role(request)
        the_day, source = self._existing_day(day)
        return download(
            request,
            source.day_lines(the_day),
            filename=day_file_name(the_day),
            content_type="application/jsonl; charset=utf-8",
        )

    def _existing_day(self, text: str) -> tuple[date, Any]:
        """The day, and what holds it: the store, or the archive (read-only) once pruned."""
        try:
            day = parse_day(text)
        except ValueError:
            raise Http404(_("%(day)s is not a day.") % {"day": text}) from None
        store = get_store()
        days = store.days()
        if day in days:
            return day, store
        archive = archived_day(days, day)
        if archive is None:
            raise Http404(_("There is no day file for %(day)s.") % {"day": text})
        return day, archive
