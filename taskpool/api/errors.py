"""One exception handler: every error is ``{"detail": "<one sentence>"}``, plus
``"errors": {field: [messages]}`` where fields are at fault.

Domain errors (``taskpool.exceptions``) are mapped to status codes here and
nowhere else.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation, TooManyFieldsSent
from django.db import DatabaseError, InterfaceError, OperationalError
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from taskpool.exceptions import (
    AlreadyAnswered,
    AttemptEnded,
    ClaimedByOther,
    DeviceExists,
    EnrollmentRefused,
    IdempotencyConflict,
    InvalidCursor,
    InvalidMessage,
    MessageTooLarge,
    NotAddressed,
    NotClaimable,
    NotStarted,
    PoolError,
    StoreFull,
    StoreUnavailable,
    TaskClosed,
    TokenCollected,
    UnknownDevice,
    UnknownTask,
    WrongEnrollmentSecret,
)
from taskpool.missing_tables import migrate_hint

POOL_ERROR_STATUS: list[tuple[type[PoolError], int]] = [
    (InvalidMessage, status.HTTP_400_BAD_REQUEST),
    (InvalidCursor, status.HTTP_400_BAD_REQUEST),
    (NotClaimable, status.HTTP_400_BAD_REQUEST),
    (NotAddressed, status.HTTP_403_FORBIDDEN),
    (EnrollmentRefused, status.HTTP_403_FORBIDDEN),
    (WrongEnrollmentSecret, status.HTTP_403_FORBIDDEN),
    (UnknownTask, status.HTTP_404_NOT_FOUND),
    (UnknownDevice, status.HTTP_404_NOT_FOUND),
    (DeviceExists, status.HTTP_409_CONFLICT),
    (TokenCollected, status.HTTP_410_GONE),
    (AlreadyAnswered, status.HTTP_409_CONFLICT),
    (TaskClosed, status.HTTP_409_CONFLICT),
    (ClaimedByOther, status.HTTP_409_CONFLICT),
    (AttemptEnded, status.HTTP_409_CONFLICT),
    (NotStarted, status.HTTP_409_CONFLICT),
    (MessageTooLarge, status.HTTP_413_REQUEST_ENTITY_TOO_LARGE),
    (IdempotencyConflict, status.HTTP_422_UNPROCESSABLE_ENTITY),
    (StoreFull, status.HTTP_507_INSUFFICIENT_STORAGE),  # before its base class
    (StoreUnavailable, status.HTTP_503_SERVICE_UNAVAILABLE),
]

#: Seconds a client is asked to wait before retrying a write the store could not take.
RETRY_AFTER_SECONDS = 5


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "too_large"


class LengthRequired(exceptions.APIException):
    status_code = status.HTTP_411_LENGTH_REQUIRED
    default_detail = (
        "Send the request body with a Content-Length header; a chunked body is not read."
    )
    default_code = "length_required"


def status_of(error: PoolError) -> int:
    for error_class, code in POOL_ERROR_STATUS:
        if isinstance(error, error_class):
            return code
    return status.HTTP_400_BAD_REQUEST


def field_errors(detail: Any) -> dict[str, list[str]]:
    """DRF's nested ``ValidationError`` detail, flattened to ``{"a.b": ["message"]}``."""
    errors: dict[str, list[str]] = {}
    _flatten(errors, "", detail)
    return errors


def _flatten(errors: dict[str, list[str]], prefix: str, value: Any) -> None:
    # A function of the module, not a closure calling itself: that would be a reference
    # cycle (the function, its cell) left by every refused request.
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(errors, f"{prefix}.{key}" if prefix else str(key), inner)
    elif isinstance(value, list) and value and not all(isinstance(v, str) for v in value):
        for position, inner in enumerate(value):
            _flatten(errors, f"{prefix}.{position}" if prefix else str(position), inner)
    else:
        messages = value if isinstance(value, list) else [value]
        errors.setdefault(prefix or "non_field_errors", []).extend(str(m) for m in messages)


def error_body(detail: str, errors: dict[str, list[str]] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"detail": detail}
    if errors:
        body["errors"] = errors
    return body


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, with domain errors mapped and every body in the one shape."""
    hint = migrate_hint(exc) if isinstance(exc, DatabaseError) else None
    if hint is not None:
        # The site is not set up, which no retry mends (SQLite says so with an
        # OperationalError, which would otherwise read as an outage).
        logging.getLogger("taskpool").error("%s (%s)", hint, exc)
        return Response(error_body(hint), status=status.HTTP_500_INTERNAL_SERVER_ERROR)
    if isinstance(exc, OperationalError | InterfaceError):
        # The database does not answer (down, restarting, a connection cut): the
        # connection is replaced at the next request, so a retry may succeed.
        logging.getLogger("taskpool").warning("The database does not answer: %s", exc)
        exc = StoreUnavailable(
            f"The database does not answer now; retry in {RETRY_AFTER_SECONDS} s (Retry-After)."
        )
    if isinstance(exc, PoolError):
        errors = {exc.field: [exc.message]} if exc.field else None
        response = Response(error_body(exc.message, errors), status=status_of(exc))
        if isinstance(exc, StoreUnavailable):
            response["Retry-After"] = str(RETRY_AFTER_SECONDS)
            if isinstance(exc.__cause__, DatabaseError):
                # The client is told to come back; the operator needs the database's words.
                logging.getLogger("taskpool").warning("%s (%s)", exc.message, exc.__cause__)
        return response
    if isinstance(exc, SuspiciousOperation):
        return _suspicious(exc)
    if isinstance(exc, DatabaseError):
        # Not the request's fault, nor a database that does not answer: a read-only one, say. The log has the database's words; the client gets JSON, not HTML.
        logging.getLogger("taskpool").error("The database refused a request: %s", exc)
        return Response(
            error_body("The server's database refused the request; its log says why."),
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )
    handled = drf_exception_handler(exc, context)
    if handled is None:
        return None
    response = handled
    if isinstance(exc, exceptions.ValidationError):
        errors = field_errors(exc.detail)
        field, messages = next(iter(errors.items()))
        # "meta: meta may nest..." would say the field twice.
        where = "" if field == "non_field_errors" or messages[0].startswith(field) else f"{field}: "
        response.data = error_body(f"Invalid request. {where}{messages[0]}", errors)
    else:
        response.data = error_body(_sentence(getattr(exc, "detail", str(exc))))
    return response


def _suspicious(exc: SuspiciousOperation) -> Response:
    """Django's refusal of a request it will not parse (too many parameters, too big a body).

    Django would answer these with its HTML 400 page: here they are refused
    in the API's shape, and logged where Django logs them.
    """
    code: int = status.HTTP_400_BAD_REQUEST
    detail = "The request is malformed."
    if isinstance(exc, TooManyFieldsSent):
        detail = f"The request has more than {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS} parameters."
    elif isinstance(exc, RequestDataTooBig):
        code, detail = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, "The request body is too large."
    security_log = logging.getLogger(f"django.security.{type(exc).__name__}")
    security_log.error(str(exc), extra={"status_code": code})
    return Response(error_body(detail), status=code)


def _sentence(detail: Any) -> str:
    # simplejwt puts a dict with its own "detail" (and per-token messages) here.
    if isinstance(detail, dict):
        detail = detail.get("detail", next(iter(detail.values()), ""))
    if isinstance(detail, list):
        detail = detail[0] if detail else ""
    return str(detail)
