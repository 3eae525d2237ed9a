"""The JSON request parser: DRF's, refusing what would fail later with a 500.

- Text PostgreSQL cannot store: JSON can carry `\\u0000` and unpaired surrogates (`\\ud800`), which
  text and jsonb cannot hold, so a string field would be refused by DRF while a free-form object (an
  agent's `default_params`, say) failed at INSERT with a 500. Refused here: one clear 400 for every
  field, nested or not.
- Nesting deeper than MAX_DEPTH: every later step (serializers, json.dumps into jsonb, the provider
  request) recurses through the body, and a body nested thousands deep ran Python out of recursion
  (a 500). Refused here with 400 `invalid_json`, by a walk that does not recurse; a body so deep
  that the decoder itself hits the recursion limit gets the same answer.
"""

from __future__ import annotations

import re
from typing import Any

from rest_framework import parsers

from sentinel_site.errors import ApiError

UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
MAX_DEPTH = 64  # objects and arrays inside one another; real requests (tools' JSON schemas included) stay far below


def _too_deep() -> ApiError:
    return ApiError(400, f"The JSON body is nested too deeply: at most {MAX_DEPTH} levels of objects and arrays.", code="invalid_json")


def check_body(value: Any) -> None:
    """Raise a 400 for a body nested deeper than MAX_DEPTH, or for the first string or key holding
    NUL or an unpaired surrogate (naming its path). Iterative, in document order."""
    stack: list[tuple[Any, str, int]] = [(value, "", 1)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, str):
            if UNSTORABLE.search(item):
                raise _unstorable(path)
            continue
        if isinstance(item, dict | list) and depth > MAX_DEPTH:
            raise _too_deep()
        if isinstance(item, dict):
            children = []
            for key, child in item.items():
                child_path = f"{path}.{key}" if path else key
                if UNSTORABLE.search(key):
                    raise _unstorable(child_path)
                children.append((child, child_path, depth + 1))
            stack.extend(reversed(children))
        elif isinstance(item, list):
            stack.extend((child, f"{path}[{index}]", depth + 1) for index, child in reversed(list(enumerate(item))))


def _unstorable(path: str) -> ApiError:
    return ApiError(
        400,
        f"{path or 'body'}: text may not contain NUL (\\u0000) or unpaired surrogates.",
        param=path or None,
        code="invalid_value",
    )


class JSONParser(parsers.JSONParser):
    """DRF's JSONParser; too deep a body, or text PostgreSQL cannot store, is a 400."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise _too_deep() from None
        check_body(data)
        return data
