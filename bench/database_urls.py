"""The benchmark's URLs, and the PostgreSQL benchmark's comparison endpoint."""

from django.urls import path
from django.views.decorators.common import no_append_slash

from bench.database_views import PendingFromMemoryView
from bench.urls import urlpatterns as bench_urlpatterns

urlpatterns = [
    *bench_urlpatterns,
    path("bench/pending-from-memory", no_append_slash(PendingFromMemoryView.as_view())),
]
