"""A comparison endpoint for the PostgreSQL benchmark: a device's pending answer, from memory.

``PendingFromMemoryView`` answers exactly what ``GET /pool/pending`` answered
the device when ``remember`` was called, through the same stack, without
asking the store. Beside the real endpoint and the no-op, it splits the
cost of an answer: the no-op to it is what rendering that many tasks costs;
it to the real endpoint is what the store costs.
"""

from __future__ import annotations

from rest_framework.request import Request
from rest_framework.response import Response

from taskpool.api.views import PoolAPIView
from taskpool.messages import Message
from taskpool.permissions import IsDevice

_answers: dict[str, list[Message]] = {}


def remember(answers: dict[str, list[Message]]) -> None:
    """Answer each device ``answers[device]`` from now on."""
    global _answers
    _answers = answers


class PendingFromMemoryView(PoolAPIView):
    permission_classes = [IsDevice]

    def get(self, request: Request) -> Response:
        return Response(_answers.get(request.user.id, []))
