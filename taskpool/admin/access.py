"""Who sees what in the pool's admin pages.

Every page first needs what the admin always needs: an active staff account,
logged in through the admin's own login (``admin_site.admin_view``). Then:

- **Devices and roles** are ordinary models: Django's model permissions
  (view, add, change, delete) decide, as for any model. Validating,
  invalidating, revoking and issuing tokens need *change* on devices.
- **Tasks** (a day's tasks, a thread, sending, cancelling) need the pool role
  *master* or above, as ``POST /pool/task`` does; so do the pending tasks
  and recent messages on a device's page, which show the pool's messages.
- **Day files** (the list, a day's messages, one message's JSON, the raw
  download) need the pool role *admin*, as ``GET /pool/log`` does.

A superuser counts as an admin. A staff user without a pool role sees neither
tasks nor day files.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import URLPattern, path

from taskpool.models import UserRole
from taskpool.principals import has_role

#: The pool role the task pages need.
TASKS_ROLE = UserRole.MASTER
#: The pool role the day-file pages need.
DAY_FILES_ROLE = UserRole.ADMIN


def can_use_tasks(user: Any) -> bool:
    """Whether ``user`` may see threads, send and cancel tasks."""
    return has_role(user, TASKS_ROLE)


def can_read_day_files(user: Any) -> bool:
    """Whether ``user`` may read the day files and their raw messages."""
    return has_role(user, DAY_FILES_ROLE)


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
            self.admin_site.admin_view(view),
            name=f"{opts.app_label}_{opts.model_name}_{name}",
        )

    def has_role(self, request: HttpRequest) -> bool:
        return has_role(request.user, self.role)

    def require_role(self, request: HttpRequest) -> None:
        if not self.has_role(request):
            raise PermissionDenied

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
        """A page in the admin's frame: its sidebar, header, and this model's ``opts``."""
        return TemplateResponse(
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
