"""The two comparison endpoints, served by the same stack as ``/pool/pending``.

Both subclass taskpool's ``PoolAPIView``, so they authenticate, check
permissions and render exactly as the real view does; only the work differs.
"""

from __future__ import annotations

from rest_framework.request import Request
from rest_framework.response import Response

from bench.naive import naive_pending
from taskpool.api import queries
from taskpool.api.views import PoolAPIView
from taskpool.conf import pool_settings
from taskpool.permissions import IsDevice


class NoopView(PoolAPIView):
    """An authenticated device endpoint that does nothing: the floor no endpoint beats."""

    permission_classes = [IsDevice]

    def get(self, request: Request) -> Response:
        return Response([])


class NaivePendingView(PoolAPIView):
    """``/pool/pending`` done the straightforward way: read every day file on every request."""

    permission_classes = [IsDevice]
    query_serializer_class = queries.PendingQuerySerializer

    def get(self, request: Request) -> Response:
        query = self.query
        return Response(
            naive_pending(
                pool_settings.DATA_DIR,
                request.user.id,
                task_ttl=pool_settings.TASK_TTL.total_seconds(),
                limit=query["limit"],
            )
        )
