"""Include with ``path("pool/", include("taskpool.urls"))``."""

from taskpool.api.urls import urlpatterns

app_name = "taskpool"

__all__ = ["app_name", "urlpatterns"]
