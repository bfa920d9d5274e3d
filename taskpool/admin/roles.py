"""Pool roles in the admin: their own changelist, and an inline on the user admin.

The inline is added to whatever admin the site registered for its user
model (Django's ``UserAdmin`` or a site's own), which is unregistered and
registered again as a subclass with the inline: list ``taskpool`` after
``django.contrib.auth`` (or the app of the user admin) in ``INSTALLED_APPS``.
"""

from __future__ import annotations

from typing import Any, cast

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.widgets import AutocompleteSelect
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from taskpool.admin.access import RoleOrModelPermissions
from taskpool.models import UserRole


class CheckedAutocompleteSelect(AutocompleteSelect):
    """Django's search box for the user, which looked up whatever a request gave as the
    chosen user (``?user=abc``, a number past the database's) and failed with a server
    error; such a value now shows no choice, and the form's own check refuses it."""

    def optgroups(self, name: str, value: Any, attr: Any = None) -> Any:
        try:
            return super().optgroups(name, value, attr)
        except (ValueError, TypeError, OverflowError, ValidationError):
            return super().optgroups(name, [], attr)


@admin.register(UserRole)
class UserRoleAdmin(RoleOrModelPermissions):
    """Pool roles: managed by the pool role admin, or staff with Django's permissions on them."""

    view_role = manage_role = UserRole.ADMIN
    list_display = ["user", "role", "user_email", "user_is_staff"]
    list_filter = ["role", "user__is_staff"]
    list_select_related = ["user"]

    # By the site's own user model: its login field need not be "username".

    def get_search_fields(self, request: HttpRequest) -> list[str]:
        User = get_user_model()
        fields = [User.USERNAME_FIELD, User.get_email_field_name()]
        return [f"user__{name}" for name in dict.fromkeys(fields)]

    def get_ordering(self, request: HttpRequest) -> tuple[str, ...]:
        return (f"user__{get_user_model().USERNAME_FIELD}",)

    def refusal(self, request: HttpRequest) -> str:
        return gettext("Pool roles need the pool role admin, or Django's permissions on them.")

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name in self.get_autocomplete_fields(request):
            kwargs["widget"] = CheckedAutocompleteSelect(
                db_field, self.admin_site, using=kwargs.get("using")
            )
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def get_autocomplete_fields(self, request: HttpRequest) -> list[str]:
        # The search asks the user admin, which a pool admin may not see: a plain list then.
        user_admin = self.admin_site._registry.get(get_user_model())
        if user_admin is not None and user_admin.has_view_permission(request):
            return ["user"]
        return []

    def save_model(self, request: HttpRequest, obj: UserRole, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        # A pool admin could otherwise not let them in: they may not change users.
        let_into_the_admin(request, obj)

    @admin.display(description=_("email"), ordering="user__email")
    def user_email(self, role: UserRole) -> str:
        return role.user.email

    @admin.display(description=_("staff"), boolean=True, ordering="user__is_staff")
    def user_is_staff(self, role: UserRole) -> bool:
        return role.user.is_staff


def let_into_the_admin(request: HttpRequest, role: UserRole) -> None:
    """Make the user of a role just given staff when the role's pages are in the admin, as
    ``taskpool_role`` does, and say so."""
    user = role.user
    if role.role in UserRole.STAFF_ROLES and not user.is_staff:
        user.is_staff = True
        user.save(update_fields=["is_staff"])
        messages.info(
            request,
            gettext("%(user)s is now staff, so they can log in to the admin.") % {"user": user},
        )


class UserRoleInlineForm(forms.ModelForm):
    """The role on a user's page, given when added even if it is the one preselected."""

    def has_changed(self) -> bool:
        # A form added for a role starts at the default role: unchanged, Django would skip it
        # and save the user without the role they were given.
        return self.instance.pk is None or super().has_changed()


class UserRoleFormSet(BaseInlineFormSet):
    """The role on a user's page: given or changed to admin or master, it makes them staff.

    Saved after the user's own form, so the staff box of that form cannot undo it; a role
    saved unchanged leaves the user's staff status as that form set it.
    """

    #: The request of the page, set by ``UserRoleInline.get_formset`` (for the message).
    request: HttpRequest

    def save(self, commit: bool = True) -> list[Any]:
        saved = super().save(commit)
        for role in saved:
            let_into_the_admin(self.request, role)
        return saved


class UserRoleInline(admin.StackedInline):
    model = UserRole
    form = UserRoleInlineForm
    formset = UserRoleFormSet
    can_delete = True
    max_num = 1
    extra = 0
    verbose_name = _("pool role")
    verbose_name_plural = _("pool role")
    #: Under the role (the admin's inlines have no such option: ``get_formset`` passes it).
    help_texts = {
        "role": _(
            "admin ⊇ master ⊇ user. Admins may read the day files. Giving admin or master "
            "also makes the user staff, so they can log in to the admin."
        )
    }

    def get_formset(
        self, request: HttpRequest, obj: Any = None, **kwargs: Any
    ) -> type[UserRoleFormSet]:
        # A subclass of ``formset``, made for this request by inlineformset_factory.
        formset = cast(
            type[UserRoleFormSet],
            super().get_formset(request, obj, help_texts=self.help_texts, **kwargs),
        )
        formset.request = request
        return formset


def add_role_inline(site: admin.AdminSite = admin.site) -> None:
    """Show ``UserRoleInline`` on the site's user admin, keeping that admin's own class."""
    user_model = get_user_model()
    if not site.is_registered(user_model):
        return
    user_admin = site.get_model_admin(user_model)
    if UserRoleInline in user_admin.inlines:
        return
    base = type(user_admin)
    with_roles = type(
        base.__name__, (base,), {"inlines": [*base.inlines, UserRoleInline], "__module__": __name__}
    )
    site.unregister(user_model)
    site.register(user_model, with_roles)


add_role_inline()
