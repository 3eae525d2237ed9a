"""GET /metrics: who may scrape, and the scrape.

With SENTINEL_METRICS_TOKEN set, a scrape must send it as `Authorization: Bearer <token>` (what
Prometheus sends with `authorization: {credentials: ...}` or `bearer_token_file`), from anywhere.
Without it, /metrics answers only requests from the loopback interface that no proxy forwarded
(a reverse proxy on the same host would otherwise publish it), and in production nothing: the
metrics name tenants' models and the load on every queue, which is nobody else's business.
"""

from __future__ import annotations

import hmac
import ipaddress

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sentinel_site import metrics
from sentinel_site.errors import ApiError


def refusal(request: HttpRequest) -> ApiError | None:
    """Why this request may not scrape, or None if it may."""
    token = settings.SENTINEL["METRICS_TOKEN"]
    if token:
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), token.encode()):
            return None
        return ApiError(
            401,
            "Send the metrics token as `Authorization: Bearer <SENTINEL_METRICS_TOKEN>`.",
            code="invalid_metrics_token",
            headers={"WWW-Authenticate": 'Bearer realm="sentinel-metrics"'},
        )
    if settings.SENTINEL_ENV == "production":
        return ApiError(
            403, "Set SENTINEL_METRICS_TOKEN to scrape /metrics in production.", type="permission_error", code="metrics_token_required"
        )
    if _is_local(request):
        return None
    return ApiError(
        403,
        "/metrics answers only local requests unless SENTINEL_METRICS_TOKEN is set.",
        type="permission_error",
        code="metrics_token_required",
    )


def _is_local(request: HttpRequest) -> bool:
    if request.META.get("SENTINEL_FORWARDED"):
        return False
    try:
        return ipaddress.ip_address(request.META.get("SENTINEL_PEER_ADDR", request.META.get("REMOTE_ADDR", ""))).is_loopback
    except ValueError:
        return False


def metrics_view(request: HttpRequest) -> HttpResponse:
    error = refusal(request)
    if error is not None:
        return error.response()
    return HttpResponse(generate_latest(metrics.registry()), content_type=CONTENT_TYPE_LATEST)
