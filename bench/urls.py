from django.urls import include, path
from django.views.decorators.common import no_append_slash

from bench.views import NaivePendingView, NoopView

urlpatterns = [
    path("pool/", include("taskpool.urls")),
    path("bench/noop", no_append_slash(NoopView.as_view())),
    path("bench/naive-pending", no_append_slash(NaivePendingView.as_view())),
]
