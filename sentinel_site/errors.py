"""Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}` with the right status.

Domain modules raise domain exceptions (AgentNotFound, BudgetExceeded, QueueFull, ...), never HTTP
errors; `ERRORS` below is the one table that says how a client sees each, and DRF's. Views raise
`ApiError` only for refusals they decide themselves (the request's own shape, an id in their URL,
a rule written in the view). The DRF exception handler and the plain async views both render
through `classify`, so every endpoint answers errors the same way; a turn that ends on a domain
error records it through `turn_error`, with the same status, type and code.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from django import db
from django.conf import settings
from django.http import Http404, HttpRequest, JsonResponse
from psycopg_pool import PoolTimeout, TooManyRequests
from rest_framework import exceptions

from agents import admission, backpressure
from budgets import spend
from memory import context as memory_context
from memory import forget, limits, remote
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


# --- the table ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Shape:
    """How a client sees one kind of exception. `message`, `param` and `headers` may read the exception;
    the message is the exception's own words unless said otherwise."""

    status: int
    code: str | None
    type: str = "invalid_request_error"
    param: str | Callable[[Any], str | None] | None = None
    message: Callable[[Any], str] = str
    headers: Callable[[Any], dict[str, str]] | None = None

    def error(self, exc: Exception) -> ApiError:
        param = self.param(exc) if callable(self.param) else self.param
        headers = self.headers(exc) if self.headers else None
        return ApiError(self.status, self.message(exc), type=self.type, code=self.code, param=param, headers=headers)


def _retry_after(seconds: Callable[[Any], int]) -> Callable[[Any], dict[str, str]]:
    return lambda exc: {"Retry-After": str(seconds(exc))}


def _shed_retry_after(exc: Any) -> int:
    return settings.SENTINEL["SHED_RETRY_AFTER"]


_BEARER = {"WWW-Authenticate": 'Bearer realm="sentinel"'}

ERRORS: dict[type[Exception], Shape] = {
    # Domain errors: admitting a turn, and what it runs into.
    admission.AgentNotFound: Shape(404, "model_not_found", param="model"),
    admission.IdempotencyKeyReused: Shape(422, "idempotency_key_reused"),
    admission.ConversationNotFound: Shape(404, "conversation_not_found", param="conversation"),
    admission.ConversationAgentMismatch: Shape(400, "conversation_agent_mismatch", param="conversation"),
    admission.ConversationBusy: Shape(
        409, "conversation_busy", param="conversation", headers=lambda exc: {"Sentinel-Running-Turn-Id": str(exc.turn_id)}
    ),
    memory_context.ContextLengthExceeded: Shape(400, "context_length_exceeded", param="messages"),
    spend.UnpricedModel: Shape(400, "model_not_priced", param="model"),
    spend.BudgetExceeded: Shape(
        503,
        "budget_exceeded",
        type="budget_exceeded",
        message=lambda exc: f"{exc} It resets in {exc.retry_after} seconds.",
        headers=_retry_after(lambda exc: exc.retry_after),
    ),
    backpressure.QueueFull: Shape(503, "queue_full", type="overloaded", headers=_retry_after(_shed_retry_after)),
    # Domain errors: memory.
    remote.EmbeddingsUnavailable: Shape(503, "embeddings_unavailable", type="server_error", headers=lambda exc: {"Retry-After": "2"}),
    limits.SlotTaken: Shape(409, "consolidation_in_progress", headers=_retry_after(lambda exc: limits.RETRY_AFTER_SECONDS)),
    limits.TenantBusy: Shape(
        429, "too_many_consolidations", type="rate_limit_error", headers=_retry_after(lambda exc: limits.RETRY_AFTER_SECONDS)
    ),
    forget.MessageNotFound: Shape(404, "not_found"),
    forget.TurnInProgress: Shape(409, "turn_in_progress"),
    # DRF's exceptions (raised by DRF itself, serializers, authentication, permissions, throttles).
    exceptions.ValidationError: Shape(
        400,
        "invalid_value",
        param=lambda exc: first_validation_error(exc.detail)[0],
        message=lambda exc: _validation_message(*first_validation_error(exc.detail)),
    ),
    exceptions.ParseError: Shape(
        400, "invalid_json", message=lambda exc: f"We could not parse the JSON body of your request: {exc.detail}"
    ),
    exceptions.UnsupportedMediaType: Shape(415, "unsupported_media_type", message=lambda exc: str(exc.detail)),
    exceptions.NotAuthenticated: Shape(
        401,
        "missing_api_key",
        message=lambda exc: "You didn't provide an API key. Send it as `Authorization: Bearer <key>`.",
        headers=lambda exc: dict(_BEARER),
    ),
    exceptions.AuthenticationFailed: Shape(401, "invalid_api_key", message=lambda exc: str(exc.detail), headers=lambda exc: dict(_BEARER)),
    exceptions.PermissionDenied: Shape(403, "insufficient_permissions", type="permission_error", message=lambda exc: str(exc.detail)),
    exceptions.NotFound: Shape(404, "not_found", message=lambda exc: "No such object."),
    Http404: Shape(404, "not_found", message=lambda exc: "No such object."),
    exceptions.MethodNotAllowed: Shape(405, "method_not_allowed", message=lambda exc: str(exc.detail)),
    exceptions.NotAcceptable: Shape(406, "not_acceptable", message=lambda exc: str(exc.detail)),
    exceptions.Throttled: Shape(
        429,
        "rate_limit_exceeded",
        type="rate_limit_error",
        message=lambda exc: str(exc.detail),
        headers=_retry_after(lambda exc: int(exc.wait or 1)),
    ),
}


def _validation_message(param: str | None, message: str) -> str:
    return f"{param}: {message}" if param else message


def shape_of(exc: Exception) -> Shape | None:
    """The table's entry for the exception's class or its nearest listed base."""
    for kind in type(exc).__mro__:
        shape = ERRORS.get(kind)
        if shape is not None:
            return shape
    return None


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
    shape = shape_of(exc)
    if shape is not None:
        return shape.error(exc)
    if isinstance(exc, exceptions.APIException):  # any other DRF exception keeps its own status and code
        return ApiError(exc.status_code, str(exc.detail), code=exc.default_code)
    return None


def turn_error(exc: Exception) -> dict[str, Any]:
    """How a turn that ended on a domain error records it (Turn.error, its events, its live stream):
    the table's status, type and code, in the exception's own words. No param and no Retry-After,
    nor the table's message when it says when to retry: a record is read later, when that is stale."""
    shape = shape_of(exc)
    if shape is None:
        raise TypeError(f"{type(exc).__name__} is not in sentinel_site.errors.ERRORS")
    return {"status": shape.status, "type": shape.type, "code": shape.code, "message": str(exc)}


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
