"""Request-scoped context: an id for every request, echoed back and attached to log lines, and the
request's trace span when tracing is on (sentinel_site.tracing); and the client's real address and
scheme when the request came through a trusted reverse proxy (sentinel_site.proxies)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.http import HttpRequest, HttpResponse

from sentinel_site import logs, proxies, tracing

_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")
# A resolved route's parameters, as Django writes them (`<uuid:pk>`) and as DRF routers do (`(?P<pk>...)`).
_ROUTE_PARAMETER = re.compile(r"<(?:\w+:)?(\w+)>|\(\?P<(\w+)>[^)]*\)")


def _incoming_id(request: HttpRequest) -> str:
    candidate = request.headers.get("X-Request-Id", "")
    return candidate if _SAFE_ID.match(candidate) else uuid.uuid4().hex


def _trace_id(request: HttpRequest, request_id: str) -> str:
    """The W3C traceparent's trace id when a caller sends one, else the request id."""
    match = _TRACEPARENT.match(request.headers.get("traceparent", ""))
    return match.group(1) if match else request_id


def _server_span(request: HttpRequest):
    """The request's SERVER span, continuing the caller's traceparent; named once the route is known."""
    if not tracing.is_on():
        return tracing.span("")  # a no-op: spare building its attributes
    return tracing.span(
        request.method or "HTTP",
        "server",
        {"http.request.method": request.method, "url.path": request.path, "url.scheme": request.scheme},
        parent_traceparent=request.headers.get("traceparent", ""),
    )


def _route(request: HttpRequest) -> str:
    """The matched URL pattern as a template (`/v1/turns/{pk}`), or "" when none matched."""
    match = getattr(request, "resolver_match", None)
    if match is None or not match.route:
        return ""
    template = _ROUTE_PARAMETER.sub(lambda m: "{" + (m.group(1) or m.group(2)) + "}", match.route)
    return "/" + template.replace("^", "").replace("$", "")


def _finish(span: tracing.Span, request: HttpRequest, response: HttpResponse) -> None:
    if not tracing.is_on():
        return
    route = _route(request)
    if route:
        span.rename(f"{request.method} {route}")
        span.set_attribute("http.route", route)
    span.set_attribute("http.response.status_code", response.status_code)
    tenant = logs.tenant_id.get()
    if tenant != "-":
        span.set_attribute("sentinel.tenant.id", tenant)
    if response.status_code >= 500:
        span.fail(str(response.status_code))


_FORWARDING_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST", "HTTP_FORWARDED", "HTTP_X_REAL_IP")


def apply_proxy_headers(meta: dict) -> None:
    """Make REMOTE_ADDR the client's address, and drop forwarding headers nobody trusted wrote.

    From a trusted proxy, REMOTE_ADDR becomes the rightmost untrusted X-Forwarded-For hop and
    X-Forwarded-Proto stays for Django's SECURE_PROXY_SSL_HEADER. From anyone else the forwarding
    headers are removed, so no code further in (rate limits, the admin, is_secure()) can believe
    them. The connection's own address stays in SENTINEL_PEER_ADDR, and SENTINEL_FORWARDED says
    whether the request claimed to be forwarded at all (/metrics without a token wants neither).
    """
    remote = meta.get("REMOTE_ADDR", "")
    meta["SENTINEL_PEER_ADDR"] = remote
    meta["SENTINEL_FORWARDED"] = any(name in meta for name in _FORWARDING_HEADERS)
    trusted = settings.SENTINEL["TRUSTED_PROXIES"]
    if trusted and proxies.is_trusted(proxies.parse_address(remote), trusted):
        meta["REMOTE_ADDR"] = proxies.client_address(remote, meta.get("HTTP_X_FORWARDED_FOR", ""), trusted)
        return
    for name in _FORWARDING_HEADERS:
        meta.pop(name, None)


class _Middleware:
    """A middleware that runs in a sync chain and an async one alike, without a thread hop."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)


class ProxyHeadersMiddleware(_Middleware):
    """Believe X-Forwarded-For and X-Forwarded-Proto only from SENTINEL_TRUSTED_PROXIES (first in the chain)."""

    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        apply_proxy_headers(request.META)
        return self.get_response(request)  # a coroutine when the chain is async: the caller awaits it


class RequestIdMiddleware(_Middleware):
    """Give each request an id (or keep a well-formed client one) and return it as X-Request-Id."""

    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        if self.is_async:
            return self._acall(request)
        token = logs.request_id.set(_incoming_id(request))
        trace = logs.trace_id.set(_trace_id(request, logs.request_id.get()))
        try:
            with _server_span(request) as span:
                if span.trace_id:  # tracing is on: logs carry the span's trace id, so they join
                    logs.trace_id.set(span.trace_id)
                response = self.get_response(request)
                response["X-Request-Id"] = logs.request_id.get()
                _finish(span, request, response)
                return response
        finally:
            logs.trace_id.reset(trace)
            logs.request_id.reset(token)

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        token = logs.request_id.set(_incoming_id(request))
        trace = logs.trace_id.set(_trace_id(request, logs.request_id.get()))
        try:
            with _server_span(request) as span:
                if span.trace_id:
                    logs.trace_id.set(span.trace_id)
                response = await self.get_response(request)
                response["X-Request-Id"] = logs.request_id.get()
                _finish(span, request, response)
                return response
        finally:
            logs.trace_id.reset(trace)
            logs.request_id.reset(token)
