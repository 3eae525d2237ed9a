"""The endpoints a batch line may call, each as: check a body, the admission request it becomes,
and the body of its answer once its turn succeeded."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agents.api import schema
from agents.api.serializers import TurnSerializer
from agents.models import Turn


@dataclass(frozen=True)
class Endpoint:
    check: Callable[[dict[str, Any]], None]  # raises batches.lines.LineRefused or DRF's ValidationError
    request: Callable[[dict[str, Any]], dict[str, Any]]  # the validated chat request admission takes
    answer: Callable[[Turn], dict[str, Any]]  # the succeeded turn's response body


def _chat_request(body: dict[str, Any]) -> dict[str, Any]:
    data = dict(schema.validate(body))
    data["stream"] = False  # a batch line's answer goes to the output file, not to a stream
    return data


def _chat_answer(turn: Turn) -> dict[str, Any]:
    return TurnSerializer(turn).data["response"]


def _chat_check(body: dict[str, Any]) -> None:
    _chat_request(body)


CHAT = Endpoint(check=_chat_check, request=_chat_request, answer=_chat_answer)

ENDPOINTS: dict[str, Endpoint] = {"/v1/chat/completions": CHAT}


def register(path: str, endpoint: Endpoint) -> None:
    """Another app's endpoint (the Responses API) becomes callable from batches."""
    ENDPOINTS[path] = endpoint
