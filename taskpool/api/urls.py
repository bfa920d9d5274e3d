"""Routes of the REST API, without trailing slashes (a wrong path is a clean 404)."""

from typing import Any

from django.urls import URLPattern, path, re_path
from django.views.decorators.common import no_append_slash

# schema also registers the token schemes with drf-spectacular.
from taskpool.api import enrollment, log, operations, realtime, schema, views


def route(pattern: str, view: Any, name: str) -> URLPattern:
    return path(pattern, no_append_slash(view), name=name)


urlpatterns = [
    route("pending", views.PendingView.as_view(), "pending"),
    route("stream", realtime.documented_as(realtime.stream, realtime.StreamSchema), "stream"),
    route("response", views.ResponseView.as_view(), "response"),
    route("heartbeat", views.HeartbeatView.as_view(), "heartbeat"),
    route("task", views.TaskView.as_view(), "task"),
    route("claim", views.ClaimView.as_view(), "claim"),
    route("device/token", views.DeviceTokenView.as_view(), "device-token"),
    route("tasks", views.TaskListView.as_view(), "tasks"),
    route("tasks/<str:task_id>", views.TaskDetailView.as_view(), "task-detail"),
    route("tasks/<str:task_id>/cancel", views.CancelView.as_view(), "task-cancel"),
    route("log", log.LogView.as_view(), "log"),
    route("devices", views.DevicesView.as_view(), "devices"),
    route("enroll", enrollment.EnrollView.as_view(), "enroll"),
    route("enroll/<str:device_id>", enrollment.EnrollmentTokenView.as_view(), "enroll-token"),
    route("auth/token", views.TokenObtainView.as_view(), "token"),
    route("auth/token/refresh", views.TokenRefreshPairView.as_view(), "token-refresh"),
    route("health", operations.HealthView.as_view(), "health"),
    route("metrics", operations.MetricsView.as_view(), "metrics"),
    route("schema", schema.SchemaView.as_view(), "schema"),
    route("docs", schema.DocsView.as_view(url_name="taskpool:schema"), "docs"),
    re_path(r"^.*$", no_append_slash(views.not_found), name="not-found"),
]
