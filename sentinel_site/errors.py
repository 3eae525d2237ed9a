"""Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}` with the right status.

Domain code raises `ApiError` (or a DRF exception); the DRF exception handler and the plain async
views both render it through `error_response`, so every endpoint answers errors the same way.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import redis
from django import db
from django.conf import settings
from django.http import Http404, HttpRequest, JsonResponse
from psycopg_pool import PoolTimeout, TooManyRequests
from rest_framework import exceptions

from sentinel_site import metrics

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error a client should see, already classified."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JsonResponse:
        response = JsonResponse(self.body(), status=self.status)
        for name, value in self.headers.items():
            response[name] = value
        return response


def not_found(what: str = "object") -> ApiError:
    return ApiError(404, f"No such {what}.", code="not_found")


def first_validation_error(detail: Any, path: str = "") -> tuple[str | None, str]:
    """Walk DRF's nested error detail to the first message and the parameter path leading to it."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            if key == "non_field_errors":
                return first_validation_error(value, path)
            child = f"{path}[{key}]" if isinstance(key, int) else (f"{path}.{key}" if path else str(key))
            return first_validation_error(value, child)
    if isinstance(detail, list) and detail:
        for index, item in enumerate(detail):
            if item in ({}, [], None):  # DRF puts empty placeholders for valid list items
                continue
            if isinstance(item, (dict, list)):
                return first_validation_error(item, f"{path}[{index}]")
            return (path or None), str(item)
    return (path or None), str(detail)


def _unavailable(what: str, code: str, exc: Exception) -> ApiError:
    """A dependency is down: 503 with Retry-After, and no traceback for the client."""
    log.warning("%s: %s", code, type(exc).__name__)
    return ApiError(503, f"{what} is unavailable; retry shortly.", type="service_unavailable", code=code, headers={"Retry-After": "2"})


def _caused_by(exc: Exception, kind: type[Exception]) -> bool:
    """The exception, or the driver's error Django re-raised it from, is a `kind`."""
    return isinstance(exc, kind) or isinstance(exc.__cause__, kind)


def _pool_exhausted() -> bool:
    """Every connection the web process's pool may open is open and lent out. A pool timeout then
    means too many requests, not a database that is down (which leaves the pool unable to open them)."""
    pool = db.connections["default"].pool
    if pool is None:
        return False
    stats = pool.get_stats()
    return stats.get("pool_size", 0) >= pool.max_size and stats.get("pool_available", 0) == 0


def _connections_busy() -> ApiError:
    """The web process's connection pool has as many requests waiting as it allows: shed this one."""
    metrics.SHED.labels("connections_busy").inc()
    return ApiError(
        503,
        "Sentinel is overloaded (every database connection is busy); retry shortly.",
        type="overloaded",
        code="connections_busy",
        headers={"Retry-After": str(settings.SENTINEL["SHED_RETRY_AFTER"])},
    )


def classify(exc: Exception) -> ApiError | None:
    """Map an exception to the ApiError a client should see, or None if it is a bug."""
    if isinstance(exc, ApiError):
        return exc
    if _caused_by(exc, TooManyRequests) or (_caused_by(exc, PoolTimeout) and _pool_exhausted()):
        return _connections_busy()
    if isinstance(exc, (db.OperationalError, db.InterfaceError, PoolTimeout)):
        return _unavailable("The database", "database_unavailable", exc)
    if isinstance(exc, redis.RedisError):
        return _unavailable("The event store", "redis_unavailable", exc)
    if isinstance(exc, exceptions.ValidationError):
        param, message = first_validation_error(exc.detail)
        return ApiError(400, f"{param}: {message}" if param else message, param=param, code="invalid_value")
    if isinstance(exc, exceptions.ParseError):
        return ApiError(400, f"We could not parse the JSON body of your request: {exc.detail}", code="invalid_json")
    if isinstance(exc, exceptions.UnsupportedMediaType):
        return ApiError(415, str(exc.detail), code="unsupported_media_type")
    if isinstance(exc, exceptions.NotAuthenticated):
        return ApiError(
            401,
            "You didn't provide an API key. Send it as `Authorization: Bearer <key>`.",
            code="missing_api_key",
            headers={"WWW-Authenticate": 'Bearer realm="sentinel"'},
        )
    if isinstance(exc, exceptions.AuthenticationFailed):
        return ApiError(401, str(exc.detail), code="invalid_api_key", headers={"WWW-Authenticate": 'Bearer realm="sentinel"'})
    if isinstance(exc, exceptions.PermissionDenied):
        return ApiError(403, str(exc.detail), type="permission_error", code="insufficient_permissions")
    if isinstance(exc, (exceptions.NotFound, Http404)):
        return ApiError(404, "No such object.", code="not_found")
    if isinstance(exc, exceptions.MethodNotAllowed):
        return ApiError(405, str(exc.detail), code="method_not_allowed")
    if isinstance(exc, exceptions.NotAcceptable):
        return ApiError(406, str(exc.detail), code="not_acceptable")
    if isinstance(exc, exceptions.Throttled):
        wait = int(exc.wait or 1)
        return ApiError(429, str(exc.detail), type="rate_limit_error", code="rate_limit_exceeded", headers={"Retry-After": str(wait)})
    if isinstance(exc, exceptions.APIException):
        return ApiError(exc.status_code, str(exc.detail), code=exc.default_code)
    return None


def exception_handler(exc: Exception, context: dict) -> JsonResponse | None:
    """DRF's EXCEPTION_HANDLER: every DRF view answers errors in OpenAI's shape.

    A JsonResponse, not a DRF Response, so no renderer picked by the Accept header touches it: an
    error is application/json even to a client asking a turn's events for text/event-stream.
    """
    error = classify(exc)
    if error is None:
        return None  # a bug: let Django's 500 handler log it
    return error.response()


def handler404(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return ApiError(404, f"Unknown URL: {request.path}", code="unknown_url").response()


def handler500(request: HttpRequest) -> JsonResponse:
    error = classify(sys.exc_info()[1]) if sys.exc_info()[1] else None
    if error is not None:
        return error.response()
    return ApiError(500, "The server had an error while processing your request.", type="server_error", code="internal_error").response()
