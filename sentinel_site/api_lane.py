"""The API's own lane: `/v1/` requests go through a Django handler whose middleware is async from
end to end, so a request makes no thread hop of its own before the view.

Under ASGI, every sync middleware of the site's chain (sessions, CSRF, authentication, messages,
WhiteNoise, common, security, clickjacking) costs a hop to a thread and back for each request, and
the bearer-key API uses none of sessions, CSRF, the session's user or messages: py-spy put those
hand-offs at about 40% of the web process's GIL samples (bench/HISTORY.md rows 7, 25 and 29).
This lane keeps what the API needs, in the same order: the trusted-proxy and request-id middleware
(async-capable already) and the response headers SecurityMiddleware and XFrameOptionsMiddleware
set (their hooks do no I/O, so they run inline here). Everything else (the admin, the docs, health,
/metrics) goes through the site's chain as before. `SENTINEL_API_LANE=django` sends `/v1/` there too.

A request's thread-sensitive calls (`sync_to_async`: admission, the ORM) run on one thread of their
own, as under Django's handler; but where Django starts a thread for every request and ends it after,
this lane takes an idle one a finished request left (`ApiHandler._threads`): starting and ending a
thread was about a tenth of the loaded web process's GIL samples (bench/HISTORY.md row 68). Only
while a request's database connection ends with it (the pool, the default: CONN_MAX_AGE 0).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext, markcoroutinefunction
from django.conf import settings
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.exception import convert_exception_to_response
from django.http import HttpRequest, HttpResponse
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.security import SecurityMiddleware
from django.utils.module_loading import import_string

API_PREFIX = "/v1/"
API_MIDDLEWARE = (
    "sentinel_site.middleware.ProxyHeadersMiddleware",  # first: everything after sees the real client
    "sentinel_site.middleware.RequestIdMiddleware",
    "sentinel_site.api_lane.ResponseHeadersMiddleware",
)


class ResponseHeadersMiddleware:
    """What SecurityMiddleware (the HTTPS redirect, HSTS, nosniff, referrer and opener policies) and
    XFrameOptionsMiddleware do to an API request and its response, called inline; and the body's
    Content-Length, which CommonMiddleware sets on the site's chain."""

    sync_capable = False
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Awaitable[HttpResponse]]) -> None:
        self.get_response = get_response
        self.security = SecurityMiddleware(get_response)
        self.frames = XFrameOptionsMiddleware(get_response)
        markcoroutinefunction(self)

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.security.process_request(request) or await self.get_response(request)
        response = self.security.process_response(request, response)
        response = self.frames.process_response(request, response)
        if not response.streaming and not response.has_header("Content-Length"):
            response.headers["Content-Length"] = str(len(response.content))
        return response


def connections_outlive_requests() -> bool:
    """Whether a request's database connection stays open after it (no pool: SENTINEL_DB_CONN_MAX_AGE).
    Django keeps connections per thread, so a kept idle thread would keep its connection open."""
    return bool(settings.DATABASES["default"].get("CONN_MAX_AGE"))


IDLE_THREADS_MAX = 256  # request threads kept for the next requests; past this many a finished one ends


class ApiHandler(ASGIHandler):
    """Django's ASGI handler with API_MIDDLEWARE for its chain instead of settings.MIDDLEWARE, and
    its requests' threads kept for the next requests."""

    def __init__(self) -> None:
        super().__init__()
        self._threads: list[ThreadPoolExecutor] = []  # idle, one thread each; touched on the event loop only

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        if connections_outlive_requests():
            await super().__call__(scope, receive, send)  # Django's way: a thread a request
            return
        thread = self._threads.pop() if self._threads else ThreadPoolExecutor(max_workers=1, thread_name_prefix="api")
        try:
            # Django's own handler does the same with a thread it starts here and ends on the way out.
            async with ThreadSensitiveContext(executor=thread):
                await self.handle(scope, receive, send)
        finally:
            if len(self._threads) < IDLE_THREADS_MAX:
                self._threads.append(thread)
            else:
                thread.shutdown(wait=False)

    def load_middleware(self, is_async: bool = False) -> None:
        self._view_middleware: list = []
        self._template_response_middleware: list = []
        self._exception_middleware: list = []
        handler = convert_exception_to_response(self._get_response_async)
        for path in reversed(API_MIDDLEWARE):
            handler = convert_exception_to_response(import_string(path)(handler))
        self._middleware_chain = handler


def is_api(scope: dict) -> bool:
    return scope["type"] == "http" and scope.get("path", "").startswith(API_PREFIX)
