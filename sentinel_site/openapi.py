"""OpenAPI document finishing: every operation documents the errors every operation can answer.

Authentication, permissions, rate limits, shedding and the database being away apply to the whole
API, so rather than repeat them on each view this hook adds them (OpenAI's error shape) wherever a
view did not document that status itself.
"""

from __future__ import annotations

from typing import Any

ERROR_SCHEMA = {
    "type": "object",
    "description": "OpenAI's error shape.",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
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
                entry = responses.setdefault(status, {"description": description})
                content = entry.setdefault("content", {})
                json_content = content.setdefault("application/json", {})
                json_content["schema"] = reference
                if status in ("429", "503"):
                    entry.setdefault("headers", {}).update(RETRY_AFTER)
    return result
