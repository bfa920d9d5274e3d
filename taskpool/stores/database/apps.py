from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class DatabaseStoreConfig(AppConfig):
    """The tables of ``DatabaseStore``; a site that keeps the pool in day files leaves it out."""

    name = "taskpool.stores.database"
    label = "taskpool_database"
    verbose_name = _("Task pool on PostgreSQL")
    default_auto_field = "django.db.models.BigAutoField"
