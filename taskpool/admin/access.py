"""Who sees what in the pool's admin pages.

Every page first needs what the admin always needs: an active staff account,
logged in through the admin's own login (``admin_site.admin_view``). Then:

- **Devices**: the pool role *master* sees them (to address tasks), the
  pool role *admin* manages them (adds, changes, deletes, validates,
  invalidates, revokes and issues tokens), as ``GET /pool/devices`` is an
  admin's. **Roles**: the pool role *admin* manages them. Staff without
  such a role get Django's model permissions (view, add, change, delete),
  as for any model; validating, revoking and issuing tokens need *change*.
- **Tasks** (a day's tasks, a thread, sending, cancelling) need the pool role
  *master* or above, as ``POST /pool/task`` does; so do the pending tasks
  and recent messages on a device's page, which show the pool's messages.
- **Day files** (the list, a day's messages, one message's JSON, the raw
  download) need the pool role *admin*, as ``GET /pool/log`` does.

A superuser counts as an admin. A staff user without a pool role sees neither
tasks nor day files. A refusal is a page in the admin's frame that says which
role it needs (``forbidden``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from django.contrib import admin
from django.contrib.admin import helpers
from django.contrib.admin.views.main import ERROR_FLAG
from django.contrib.messages import get_messages
from django.core.exceptions import PermissionDenied
from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, QueryDict
from django.template.response import TemplateResponse
from django.urls import URLPattern, path
from django.utils.html import format_html
from django.utils.translation import get_language
from django.utils.translation import gettext as _

from taskpool.exceptions import StoreUnavailable
from taskpool.missing_tables import migrate_hint
from taskpool.models import UserRole
from taskpool.principals import has_role, role_of
from taskpool.ticker import ticker

#: The pool role the task pages need.
TASKS_ROLE = UserRole.MASTER
#: The pool role the day-file pages need.
DAY_FILES_ROLE = UserRole.ADMIN
logger = logging.getLogger("taskpool")


def can_use_tasks(user: Any) -> bool:
    """Whether ``user`` may see threads, send and cancel tasks."""
    return has_role(user, TASKS_ROLE)


def can_read_day_files(user: Any) -> bool:
    """Whether ``user`` may read the day files and their raw messages."""
    return has_role(user, DAY_FILES_ROLE)


def needs_role(role: str) -> str:
    """The sentence of a refusal: the role a page needs."""
    return _("This page needs the pool role %(role)s (or above).") % {"role": role}


def forbidden(request: HttpRequest, model_admin: admin.ModelAdmin, reason: str) -> HttpResponse:
    """A 403 in the admin's frame, saying why and what the viewer's role is."""
    role = role_of(request.user)
    title = _("Permission denied")
    return _error_page(request, model_admin, "forbidden", title, 403, reason=reason, role=role)


def unavailable(request: HttpRequest, model_admin: admin.ModelAdmin, reason: str) -> HttpResponse:
    """A 503 in the admin's frame: the pool could not be read for the page, and why."""
    return _error_page(
        request, model_admin, "unavailable", _("The pool cannot be read"), 503, reason=reason
    )


def not_found(request: HttpRequest, model_admin: admin.ModelAdmin, reason: str) -> HttpResponse:
    """A 404 in the admin's frame, saying what is not there (a task past its horizon, a day
    pruned), where Django's own would be a bare page outside the admin."""
    return _error_page(request, model_admin, "not_found", _("Not found"), 404, reason=reason)


def _error_page(
    request: HttpRequest,
    model_admin: admin.ModelAdmin,
    template: str,
    title: str,
    status: int,
    **context: Any,
) -> HttpResponse:
    try:
        response = TemplateResponse(
            request,
            f"admin/taskpool/{template}.html",
            {
                **model_admin.admin_site.each_context(request),
                "opts": model_admin.opts,
                "title": title,
                **context,
            },
            status=status,
        )
        return response.render()
    except (OperationalError, InterfaceError):
        # The site's own database (sessions, users) does not answer either, as when it
        # holds the pool too: the admin's frame needs the user, so the page says why alone.
        reason = context.get("reason", "")
        page = format_html(
            '<!doctype html><html lang="{}"><title>{}</title><h1>{}</h1><p id="{}">{}</p></html>',
            get_language() or "en",
            title,
            title,
            template,
            reason,
        )
        return HttpResponse(page, status=status)


def with_error_pages(view: Callable[..., HttpResponse], model_admin: Any) -> Callable[..., Any]:
    """``view``, answering a ``PermissionDenied`` with ``forbidden``, an ``Http404`` with
    ``not_found``, and a store that cannot
    be read (``StoreUnavailable``, such as a day file linked to nothing, or a database that
    does not answer) with ``unavailable``, not a server error.

    The refusal's own message is the reason, else ``model_admin.refusal(request)``. A page
    is rendered here, so that what its template reads of the pool is read under the guard.
    """

    @functools.wraps(view)
    def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        # A process that serves only the admin keeps time for jobs as one serving the API
        # does: its timeouts and retries are written while staff watch them.
        ticker.ensure_running()
        try:
            response = view(request, *args, **kwargs)
            if isinstance(response, TemplateResponse) and not response.is_rendered:
                response.render()
            return response
        except PermissionDenied as denied:
            return forbidden(request, model_admin, str(denied) or model_admin.refusal(request))
        except Http404 as missing:
            return not_found(request, model_admin, str(missing))
        except StoreUnavailable as error:
            return unavailable(request, model_admin, error.message)
        except DatabaseError as error:
            hint = migrate_hint(error)
            if hint is not None:  # tables missing: no retry mends it, a migrate does
                logger.error("%s (%s)", hint, error)
                return _error_page(
                    request, model_admin, "unavailable", _("The pool is not set up"), 500,
                    reason=hint,
                )  # fmt: skip
            if not isinstance(error, OperationalError | InterfaceError):
                raise
            logger.warning("The admin could not read the pool: %s", error)
            reason = _(
                "The database does not answer now (down, restarting, or a connection cut). "
                "Try again in a moment; the server's log says what the database said."
            )
            return unavailable(request, model_admin, reason)

    return guarded


class ForbiddenPagesMixin:
    """A ``ModelAdmin`` whose refusals are ``forbidden`` pages, saying ``refusal()``."""

    def refusal(self, request: HttpRequest) -> str:
        raise NotImplementedError

    def get_urls(self) -> list[URLPattern]:
        return [
            URLPattern(
                pattern.pattern,
                with_error_pages(pattern.callback, self),
                pattern.default_args,
                pattern.name,
            )
            for pattern in super().get_urls()  # type: ignore[misc]
        ]


class RoleOrModelPermissions(ForbiddenPagesMixin, admin.ModelAdmin):
    """A model's admin open to pool roles, and to Django's model permissions for other staff.

    ``view_role`` and above may see the model; ``manage_role`` and above may
    also add, change and delete.
    """

    view_role: str = UserRole.ADMIN
    manage_role: str = UserRole.ADMIN

    def has_module_permission(self, request: HttpRequest) -> bool:
        return has_role(request.user, self.view_role) or super().has_module_permission(request)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return has_role(request.user, self.view_role) or super().has_view_permission(request, obj)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return has_role(request.user, self.manage_role) or super().has_add_permission(request)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return has_role(request.user, self.manage_role) or super().has_change_permission(
            request, obj
        )

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return has_role(request.user, self.manage_role) or super().has_delete_permission(
            request, obj
        )

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        # A NUL character names nothing, and PostgreSQL refuses even to look for one (a
        # 500): a filter or search holding one is the admin's own "invalid filter", and a
        # selected id holding one selects nothing.
        if _holds_nul(request.GET):
            return HttpResponseRedirect(f"{request.path}?{ERROR_FLAG}=1")
        if request.method == "POST" and _holds_nul(request.POST):
            selection = request.POST.copy()
            selection.setlist(
                helpers.ACTION_CHECKBOX_NAME,
                [pk for pk in selection.getlist(helpers.ACTION_CHECKBOX_NAME) if "\x00" not in pk],
            )
            request.POST = selection  # type: ignore[assignment]
        return super().changelist_view(request, extra_context)


def _holds_nul(query: QueryDict) -> bool:
    """Whether a parameter's name or one of its values holds a NUL character."""
    return any(
        "\x00" in key or any("\x00" in value for value in values) for key, values in query.lists()
    )


class PoolPagesAdmin(admin.ModelAdmin):
    """The admin of a family of pages over the pool, open to a pool role and above.

    Its model has no table (``managed = False``); it gives the pages a place
    on the index, breadcrumbs and URL names. Subclasses set ``role`` and
    list their pages in ``pages()``.
    """

    role: str = UserRole.ADMIN
    actions = None

    def pages(self) -> list[URLPattern]:
        raise NotImplementedError

    def get_urls(self) -> list[URLPattern]:
        return self.pages()

    def page(self, route: str, view: Any, name: str) -> URLPattern:
        """A URL for ``view`` behind the admin's login, named ``<app>_<model>_<name>``."""
        opts = self.opts
        return path(
            route,
            with_error_pages(self.admin_site.admin_view(view), self),
            name=f"{opts.app_label}_{opts.model_name}_{name}",
        )

    def refusal(self, request: HttpRequest) -> str:
        return needs_role(self.role)

    def has_role(self, request: HttpRequest) -> bool:
        return has_role(request.user, self.role)

    def require_role(self, request: HttpRequest) -> None:
        if not self.has_role(request):
            raise PermissionDenied(self.refusal(request))

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self.has_role(request)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.has_role(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def render(
        self, request: HttpRequest, template: str, title: str, **context: Any
    ) -> TemplateResponse:
        """A page in the admin's frame: its sidebar, header, and this model's ``opts``.

        A live page's own fetch of itself (``live.js`` names it with the header
        ``X-Taskpool-Live``) shows the messages waiting without using them up:
        made while the browser follows a form's redirect, it would take the
        "Task cancelled" the next page is there to show.
        """
        response = TemplateResponse(
            request,
            template,
            {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "title": title,
                "can_use_tasks": can_use_tasks(request.user),
                "can_read_day_files": can_read_day_files(request.user),
                **context,
            },
        )
        if request.headers.get(LIVE_REFRESH_HEADER):
            response.add_post_render_callback(lambda _rendered: _keep_messages(request))
        return response


#: The header ``live.js`` sends with a live page's fetch of itself.
LIVE_REFRESH_HEADER = "X-Taskpool-Live"


def _keep_messages(request: HttpRequest) -> None:
    """Leave the request's messages stored, though the page shown has listed them (Django's
    documented way to keep messages past an iteration)."""
    storage = get_messages(request)
    if hasattr(storage, "used"):  # no storage without the messages middleware
        storage.used = False
