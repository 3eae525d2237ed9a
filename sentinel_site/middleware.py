"""Request-scoped context: an id for every request, echoed back and attached to log lines."""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse

from sentinel_site import logs

_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")


def _incoming_id(request: HttpRequest) -> str:
    candidate = request.headers.get("X-Request-Id", "")
    return candidate if _SAFE_ID.match(candidate) else uuid.uuid4().hex


def _trace_id(request: HttpRequest, request_id: str) -> str:
    """The W3C traceparent's trace id when a caller sends one, else the request id."""
    match = _TRACEPARENT.match(request.headers.get("traceparent", ""))
    return match.group(1) if match else request_id


class RequestIdMiddleware:
    """Give each request an id (or keep a well-formed client one) and return it as X-Request-Id."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        if self.is_async:
            return self._acall(request)
        token = logs.request_id.set(_incoming_id(request))
        trace = logs.trace_id.set(_trace_id(request, logs.request_id.get()))
        try:
            response = self.get_response(request)
            response["X-Request-Id"] = logs.request_id.get()
            return response
        finally:
            logs.trace_id.reset(trace)
            logs.request_id.reset(token)

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        token = logs.request_id.set(_incoming_id(request))
        trace = logs.trace_id.set(_trace_id(request, logs.request_id.get()))
        try:
            response = await self.get_response(request)
            response["X-Request-Id"] = logs.request_id.get()
            return response
        finally:
            logs.trace_id.reset(trace)
            logs.request_id.reset(token)
