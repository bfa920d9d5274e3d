from django.apps import AppConfig


class TaskpoolConfig(AppConfig):
    name = "taskpool"
    verbose_name = "Task pool"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from taskpool import checks  # noqa: F401  (registers the system checks)
