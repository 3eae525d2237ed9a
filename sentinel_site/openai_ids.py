"""OpenAI-style ids (`file-<hex>`, `batch_<hex>`, `resp_<hex>`) over our UUIDs, and OpenAI's list pages
(`after`, `limit`, `first_id`/`last_id`/`has_more`). Another tenant's id reads as no id at all."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from django.db.models import Model, QuerySet
from drf_spectacular.utils import OpenApiParameter

from sentinel_site.errors import ApiError, not_found
from sentinel_site.params import IntegerParam

LIMIT = IntegerParam("limit", 1, 100, 20)
PAGE_PARAMETERS = [
    LIMIT.openapi("Items per page."),
    OpenApiParameter("after", str, required=False, description="The id of the last item of the previous page."),
]


def parse(prefix: str, value: str, what: str) -> uuid.UUID:
    """The UUID behind `<prefix><32 hex>`; 404 (as for an unknown id) for anything else."""
    if not value.startswith(prefix):
        raise not_found(what)
    try:
        return uuid.UUID(hex=value[len(prefix) :])
    except ValueError:
        raise not_found(what) from None


def page(request, queryset: QuerySet, prefix: str, what: str, render: Callable[[Any], dict]) -> dict:
    """Newest first; `after` is the id of the last item seen (which must be the caller's)."""
    limit = LIMIT.read(request)
    after = request.query_params.get("after")
    if after:
        anchor: Model | None = queryset.filter(id=parse(prefix, after, what)).first()
        if anchor is None:
            raise ApiError(400, f"`after` names no {what} of yours.", param="after", code="invalid_value")
        created = anchor.created_at  # type: ignore[attr-defined]
        queryset = queryset.filter(created_at__lte=created).exclude(created_at=created, id__gte=anchor.pk)
    rows = list(queryset.order_by("-created_at", "-id")[: limit + 1])
    data = [render(row) for row in rows[:limit]]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": len(rows) > limit,
    }
