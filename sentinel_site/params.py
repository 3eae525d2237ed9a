"""Query parameters, read strictly and documented from the same definition.

`?limit=null`, `?k=5.0` or `?days=` answer 400 naming the parameter, as the document's `integer,
minimum, maximum` promises, instead of quietly falling back to the default; text holding NUL is a
400 too, not a 500 when PostgreSQL is asked to compare with it.
"""

from __future__ import annotations

from dataclasses import dataclass

from drf_spectacular.utils import OpenApiParameter

from sentinel_site.errors import ApiError
from sentinel_site.parsers import UNSTORABLE


def invalid(name: str, rule: str) -> ApiError:
    return ApiError(400, f"{name} must be {rule}.", param=name, code="invalid_value")


@dataclass(frozen=True)
class IntegerParam:
    """An optional integer query parameter from `minimum` to `maximum`."""

    name: str
    minimum: int
    maximum: int
    default: int

    def read(self, request) -> int:
        raw = request.query_params.get(self.name)
        if raw is None:
            return self.default
        if not (raw.isascii() and raw.isdigit() and self.minimum <= int(raw) <= self.maximum):
            raise invalid(self.name, f"an integer from {self.minimum} to {self.maximum}")
        return int(raw)

    def schema(self) -> dict:
        return {"type": "integer", "minimum": self.minimum, "maximum": self.maximum, "default": self.default}

    def openapi(self, description: str = "") -> OpenApiParameter:
        return OpenApiParameter(self.name, self.schema(), required=False, description=description)


@dataclass(frozen=True)
class TextParam:
    """A text query parameter of `min_length` to `max_length` characters; None when absent and optional."""

    name: str
    required: bool = False
    min_length: int = 0
    max_length: int | None = None

    def read(self, request) -> str | None:
        raw = request.query_params.get(self.name)
        if raw is None and not self.required:
            return None
        if raw is None or len(raw) < self.min_length or (self.max_length is not None and len(raw) > self.max_length):
            raise invalid(self.name, f"{self.min_length} to {self.max_length or 'any number of'} characters")
        if UNSTORABLE.search(raw):
            raise invalid(self.name, "text without NUL")
        return raw

    def schema(self) -> dict:
        schema: dict = {"type": "string"}
        if self.min_length:
            schema["minLength"] = self.min_length
        if self.max_length is not None:
            schema["maxLength"] = self.max_length
        return schema

    def openapi(self, description: str = "") -> OpenApiParameter:
        return OpenApiParameter(self.name, self.schema(), required=self.required, description=description)
