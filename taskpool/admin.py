"""Admin for devices and roles. The day-file and task pages come with the admin issue."""

from django.contrib import admin

from taskpool.models import DeviceUser, UserRole


@admin.register(DeviceUser)
class DeviceUserAdmin(admin.ModelAdmin):
    list_display = ["id", "kind", "validated", "last_seen", "created_at"]
    list_filter = ["validated", "kind"]
    search_fields = ["id", "kind"]
    readonly_fields = ["user_session", "last_seen", "created_at", "updated_at"]


@admin.register(UserRole)
class UserRoleAdmin(admin.ModelAdmin):
    list_display = ["user", "role"]
    list_filter = ["role"]
    search_fields = ["user__username", "user__email"]
    list_select_related = ["user"]
    autocomplete_fields = ["user"]
