"""The web process: Django's ASGI application behind the lifespan protocol, so that traces still
buffered are flushed when uvicorn shuts down (`--lifespan on`)."""

import os
from collections.abc import Awaitable, Callable
from typing import Any

from django.core.asgi import get_asgi_application

from sentinel_site import lanes, tracing

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sentinel_site.settings")
django_application = get_asgi_application()  # the full middleware stack: admin, docs, static files
api_application = lanes.ApiHandler()  # /v1/, /health, /metrics: async middleware only
tracing.configure("sentinel-web")


async def application(scope: dict[str, Any], receive: Callable[[], Awaitable[dict]], send: Callable[[dict], Awaitable[None]]) -> None:
    if lanes.is_api(scope):
        await api_application(scope, receive, send)
        return
    if scope["type"] != "lifespan":
        await django_application(scope, receive, send)
        return
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            tracing.shutdown()  # in-flight requests are done by now: uvicorn waits for them first
            await send({"type": "lifespan.shutdown.complete"})
            return
