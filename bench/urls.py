from django.urls import include, path
from django.views.decorators.common import no_append_slash

from bench.views import NaivePendingView, NoopView
from taskpool.api.views import PendingView

urlpatterns = [
    path("pool/", include("taskpool.urls")),
    path("bench/noop", no_append_slash(NoopView.as_view())),
    path("bench/naive-pending", no_append_slash(NaivePendingView.as_view())),
    # taskpool's sync DRF view for pending, without the async long-poll wrapper.
    path("bench/sync-pending", no_append_slash(PendingView.as_view())),
]
