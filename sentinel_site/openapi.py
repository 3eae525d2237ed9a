"""OpenAPI document finishing: every operation documents the errors every operation can answer.

Authentication, permissions, rate limits, shedding and the database being away apply to the whole
API, so rather than repeat them on each view this hook adds them (OpenAI's error shape) wherever a
view did not document that status itself; and every error status, common or not, has that shape.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular import openapi
from rest_framework import serializers


class AutoSchema(openapi.AutoSchema):
    """drf-spectacular's AutoSchema, plus the item counts DRF's list serializers enforce.

    drf-spectacular leaves out `allow_empty=False`, `min_length` and `max_length` of a
    `Serializer(many=True)`, so a schema-valid empty list would be refused.
    """

    def _map_serializer_field(self, field, direction, bypass_extensions=False):
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        if isinstance(field, serializers.ListSerializer) and schema and direction == "request":
            least = max(field.min_length or 0, 0 if field.allow_empty else 1)
            if least:
                schema["minItems"] = least
            if field.max_length is not None:
                schema["maxItems"] = field.max_length
        return schema


ERROR_SCHEMA = {
    "type": "object",
    "description": "OpenAI's error shape.",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": "string", "nullable": True},
                "code": {"type": "string", "nullable": True},
            },
            "required": ["message", "type", "param", "code"],
        }
    },
    "required": ["error"],
}

COMMON_ERRORS = {
    "400": "Invalid request; `error.param` names the field.",
    "401": "Missing, unknown, expired or revoked API key.",
    "403": "The key's role lacks the permission this operation needs.",
    "404": "No such object in your tenant.",
    "405": "Method not allowed.",
    "406": "The Accept header asks for a format this operation does not produce.",
    "415": "Unsupported request content type.",
    "429": "Rate limited; `Retry-After` says when to try again.",
    "503": "Overloaded, over budget or a dependency is down; `Retry-After` when known.",
}
RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait before retrying."}}


def add_common_errors(result: dict[str, Any], generator, request, public) -> dict[str, Any]:
    """drf-spectacular postprocessing hook (see SPECTACULAR_SETTINGS)."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    reference = {"$ref": "#/components/schemas/Error"}
    for operations in result.get("paths", {}).values():
        for method, operation in operations.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            responses = operation.setdefault("responses", {})
            for status, description in COMMON_ERRORS.items():
                if status == "415" and method in ("get", "delete"):
                    continue
                entry = responses.setdefault(status, {})
                entry["description"] = entry.get("description") or description
                if status in ("429", "503"):
                    entry.setdefault("headers", {}).update(RETRY_AFTER)
            for status, entry in responses.items():
                if int(status) >= 400:  # errors are JSON whatever the Accept header (errors.exception_handler)
                    entry["content"] = {"application/json": {"schema": reference}}
    return result
