"""Two Django handlers in one web process (issue 6).

The API lane (/v1/, /health, /metrics) runs only async-native middleware, so a request never
leaves the event loop for a thread until a view asks for one. Django's own middleware is
sync-first: under ASGI each of them (and WhiteNoise, which is sync-only) hops to a thread and
back for every request, about a dozen hops that the API, authenticated by bearer keys and never
by cookies, has no use for. Everything else (the admin, the API docs, static files) goes through
the full MIDDLEWARE stack, sessions and CSRF included.
"""

from __future__ import annotations

from django.conf import settings
from django.core.handlers.asgi import ASGIHandler
from django.http import HttpRequest, HttpResponse
from django.middleware.security import SecurityMiddleware as DjangoSecurityMiddleware

API_PREFIXES = ("/v1/", "/health", "/metrics")


def is_api(scope: dict) -> bool:
    return scope["type"] == "http" and scope["path"].startswith(API_PREFIXES)


class ApiHandler(ASGIHandler):
    """Django's ASGI handler built from settings.API_MIDDLEWARE instead of settings.MIDDLEWARE."""

    def load_middleware(self, is_async: bool = False) -> None:
        # Django builds the chain from settings.MIDDLEWARE alone; swap the list in for the build
        # (once, at start-up, before any request) rather than copy Django's builder here.
        full = settings.MIDDLEWARE
        settings.MIDDLEWARE = settings.API_MIDDLEWARE
        try:
            super().load_middleware(is_async=is_async)
        finally:
            settings.MIDDLEWARE = full


class SecurityMiddleware(DjangoSecurityMiddleware):
    """Django's SecurityMiddleware (HTTPS redirect, HSTS, nosniff, Referrer-Policy, COOP) run on the
    event loop: its hooks only read settings and set headers, so they need no thread."""

    sync_capable = False
    async_capable = True

    async def __call__(self, request: HttpRequest) -> HttpResponse:  # type: ignore[override]
        response = self.process_request(request)
        if response is None:
            response = await self.get_response(request)
        return self.process_response(request, response)
