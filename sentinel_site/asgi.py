"""The web process: Django's ASGI application behind the lifespan protocol, so that traces still
buffered are flushed when uvicorn shuts down (`--lifespan on`); `/v1/` through the API's own
handler (sentinel_site/api_lane.py) unless SENTINEL_API_LANE=django."""

import os
from collections.abc import Awaitable, Callable
from typing import Any

from django.conf import settings
from django.core.asgi import get_asgi_application

from sentinel_site import api_lane, tracing

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sentinel_site.settings")
django_application = get_asgi_application()  # sets Django up first
api_application = api_lane.ApiHandler() if settings.SENTINEL["API_LANE"] == "async" else django_application
tracing.configure("sentinel-web")


async def application(scope: dict[str, Any], receive: Callable[[], Awaitable[dict]], send: Callable[[dict], Awaitable[None]]) -> None:
    if api_lane.is_api(scope):
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
