"""The JSON request parser: DRF's, refusing text PostgreSQL cannot store.

JSON can carry `\\u0000` and unpaired surrogates (`\\ud800`); PostgreSQL's text and jsonb cannot hold
them, so a string field would be refused by DRF while a free-form object (an agent's
`default_params`, say) failed at INSERT with a 500. Refusing them here answers one clear 400 for
every field, nested or not.
"""

from __future__ import annotations

import re
from typing import Any

from rest_framework import parsers

from sentinel_site.errors import ApiError

UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def unstorable_path(value: Any, path: str = "") -> str | None:
    """The path to the first string or key holding NUL or an unpaired surrogate, or None."""
    if isinstance(value, str):
        return path if UNSTORABLE.search(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            child = f"{path}.{key}" if path else key
            found = child if UNSTORABLE.search(key) else unstorable_path(item, child)
            if found is not None:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = unstorable_path(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


class JSONParser(parsers.JSONParser):
    """DRF's JSONParser; a string or key with NUL or an unpaired surrogate is a 400 naming it."""

    def parse(self, stream, media_type=None, parser_context=None):
        data = super().parse(stream, media_type, parser_context)
        path = unstorable_path(data)
        if path is not None:
            raise ApiError(
                400,
                f"{path or 'body'}: text may not contain NUL (\\u0000) or unpaired surrogates.",
                param=path or None,
                code="invalid_value",
            )
        return data
