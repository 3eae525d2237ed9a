"""A batch's input file read line by line: what each line asks, or why it cannot run.

A bad line never fails its batch: it becomes a failed line whose error names the line, and goes to
the error file. Nothing here writes; `read` returns one spec per non-blank line of the file.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rest_framework.exceptions import ValidationError

from sentinel_site.errors import classify

MAX_CUSTOM_ID = 512


@dataclass(frozen=True)
class LineSpec:
    index: int  # the line's number in the file, from 0
    custom_id: str
    body: dict[str, Any] | None
    error: dict[str, Any] | None  # {code, message, line, param} when the line cannot run


class LineRefused(Exception):
    """A line's request body is not one its endpoint takes."""

    def __init__(self, message: str, *, code: str = "invalid_request", param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.param = param


Checker = Callable[[dict[str, Any]], None]  # raises LineRefused or DRF's ValidationError


def read(content: bytes, endpoint: str, check: Checker) -> list[LineSpec]:
    """Every non-blank line of `content`, checked for the batch's endpoint; duplicates of a custom_id
    after its first line are refused."""
    specs: list[LineSpec] = []
    seen: set[str] = set()
    for index, raw in enumerate(content.decode("utf-8", errors="replace").splitlines()):
        if not raw.strip():
            continue
        spec = _line(index, raw, endpoint, check)
        if spec.error is None and spec.custom_id in seen:
            spec = _refused(index, spec.custom_id, "duplicate_custom_id", f"The custom_id `{spec.custom_id}` is used by an earlier line.")
        seen.add(spec.custom_id)
        specs.append(spec)
    return specs


def _line(index: int, raw: str, endpoint: str, check: Checker) -> LineSpec:
    try:
        request = json.loads(raw)
    except ValueError as error:
        return _refused(index, "", "invalid_json", f"Line {index + 1} is not valid JSON: {error}")
    if not isinstance(request, dict):
        return _refused(index, "", "invalid_json", f"Line {index + 1} is not a JSON object.")
    custom_id = request.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id or len(custom_id) > MAX_CUSTOM_ID:
        return _refused(
            index, "", "missing_custom_id", f"Line {index + 1} needs a `custom_id`: a string of 1 to {MAX_CUSTOM_ID} characters."
        )
    if request.get("method") != "POST":
        return _refused(index, custom_id, "invalid_method", "`method` must be `POST`.", param="method")
    if request.get("url") != endpoint:
        return _refused(index, custom_id, "mismatched_endpoint", f"`url` must be the batch's endpoint, `{endpoint}`.", param="url")
    body = request.get("body")
    if not isinstance(body, dict):
        return _refused(index, custom_id, "invalid_body", "`body` must be a JSON object.", param="body")
    try:
        check(body)
    except LineRefused as refused:
        return _refused(index, custom_id, refused.code, str(refused), param=_param(refused.param))
    except ValidationError as invalid:
        error = classify(invalid)
        assert error is not None
        return _refused(index, custom_id, "invalid_request", error.message, param=_param(error.param))
    return LineSpec(index=index, custom_id=custom_id, body=body, error=None)


def _param(param: str | None) -> str:
    return f"body.{param}" if param else "body"


def _refused(index: int, custom_id: str, code: str, message: str, param: str | None = None) -> LineSpec:
    return LineSpec(
        index=index, custom_id=custom_id, body=None, error={"code": code, "message": message, "param": param, "line": index + 1}
    )
