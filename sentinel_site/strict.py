"""Serializer fields that take JSON as it is, so the OpenAPI document says exactly what they accept.

DRF is lenient where our schema is not: its CharField turns `0` into `"0"` and strips whitespace (so
`" "` passes `minLength: 1` and is then refused as blank), its DecimalField takes `" 1e3"` and `"-0"`
under a pattern that admits `"."`. Input serializers use these instead (`strict.CharField`, or
`strict.ModelSerializer`, which maps model text fields to them).
"""

from __future__ import annotations

import re
from decimal import Decimal

from django.db import models
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from rest_framework import serializers


class StrictString:
    """Only a JSON string is a string; it is kept as sent (no trimming unless asked for)."""

    default_error_messages = {"not_a_string": "Not a valid string."}

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(*args, **kwargs)

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("not_a_string")
        return super().to_internal_value(data)


class CharField(StrictString, serializers.CharField):
    pass


class RegexField(StrictString, serializers.RegexField):
    pass


class SlugField(StrictString, serializers.SlugField):
    pass


class URLField(StrictString, serializers.URLField):
    pass


class ModelSerializer(serializers.ModelSerializer):
    """A ModelSerializer whose generated text fields are strict."""

    serializer_field_mapping = {
        **serializers.ModelSerializer.serializer_field_mapping,
        models.CharField: CharField,
        models.TextField: CharField,
        models.SlugField: SlugField,
        models.URLField: URLField,
    }


class DecimalField(serializers.DecimalField):
    """A non-negative amount: a string of plain digits ("12.5", taken exactly) or a JSON number.

    A JSON number is binary floating point, so it is rounded to the field's decimal places rather
    than refused for its stray digits (0.1 + 0.2 is 0.30000000000000004). `pattern` overrides the documented and
    enforced string form when `max_value` narrows it (a share from 0 to 1, say).
    """

    default_error_messages = {"not_a_decimal": 'Must be a number, or a string of digits such as "12.50".'}

    def __init__(self, max_digits: int, decimal_places: int, *, pattern: str | None = None, **kwargs):
        kwargs.setdefault("min_value", 0)
        assert kwargs["min_value"] >= 0, "strict.DecimalField is for non-negative amounts"
        super().__init__(max_digits, decimal_places, **kwargs)
        self.pattern = pattern or rf"^\d{{1,{max_digits - decimal_places}}}(\.\d{{1,{decimal_places}}})?$"
        # Anchored and ASCII as a JSON Schema pattern is: Python's `$` would allow a final newline, `\d` any digit.
        self.regex = re.compile(self.pattern.removeprefix("^").removesuffix("$"), re.ASCII)

    def to_internal_value(self, data):
        if isinstance(data, str):
            if not self.regex.fullmatch(data):
                self.fail("not_a_decimal")
        elif isinstance(data, float):
            data = f"{data:.{self.decimal_places}f}"  # "nan" and "inf" are then refused below
        elif isinstance(data, bool) or not isinstance(data, int):
            self.fail("not_a_decimal")
        return super().to_internal_value(data)

    def openapi_schema(self, direction: str) -> dict:
        string = {"type": "string", "format": "decimal", "pattern": self.pattern}
        if direction == "response":
            return string
        maximum = (
            self.max_value if self.max_value is not None else Decimal(10) ** self.max_whole_digits - Decimal(10) ** -self.decimal_places
        )
        number = {"type": "number", "minimum": float(self.min_value), "maximum": float(maximum)}
        return {"oneOf": [string, number]}


class DecimalFieldSchema(OpenApiSerializerFieldExtension):
    """Documents strict.DecimalField as it validates."""

    target_class = DecimalField

    def map_serializer_field(self, auto_schema, direction):
        return self.target.openapi_schema(direction)
