from django.apps import AppConfig


class TaskpoolConfig(AppConfig):
    name = "taskpool"
    verbose_name = "Task pool"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.core.signals import request_finished

        from taskpool import checks  # noqa: F401  (registers the system checks)
        from taskpool.request_connections import close_after_asgi_request

        request_finished.connect(close_after_asgi_request, dispatch_uid="taskpool-asgi-close")
