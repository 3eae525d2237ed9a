"""The endpoints a batch line may call, each as: check a body, the admission request it becomes,
and the body of its answer once its turn succeeded."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agents.admission import ConversationNotFound
from agents.api import schema
from agents.api.serializers import TurnSerializer
from agents.models import Turn
from batches.lines import LineRefused
from responses import shapes, translate
from responses.api.serializers import ResponseCreateSerializer
from responses.models import Response


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


def _responses_request(body: dict[str, Any]) -> dict[str, Any]:
    serializer = ResponseCreateSerializer(data=body)
    serializer.is_valid(raise_exception=True)
    request = dict(serializer.validated_data)
    if request.get("previous_response_id") or request.get("background"):
        raise LineRefused(
            "A batch line cannot use `previous_response_id` or `background`; `conversation` works.", param="previous_response_id"
        )
    try:
        items = translate.input_items(request["input"])
        chat = translate.chat_request({**request, "stream": False}, items, translate.conversation_id(request.get("conversation")))
    except translate.Untranslatable as refused:
        raise LineRefused(str(refused), param=refused.param) from None
    except ConversationNotFound:
        raise LineRefused("No such conversation.", code="conversation_not_found", param="conversation") from None
    data = dict(schema.validate(chat))
    data["stream"] = False
    return data


def _responses_check(body: dict[str, Any]) -> None:
    _responses_request(body)


def _responses_answer(turn: Turn) -> dict[str, Any]:
    """The response object of a batch line (not stored as a response: the line's output file holds it)."""
    response = Response(id=turn.id, tenant_id=turn.tenant_id, turn=turn, model=turn.agent.name, created_at=turn.created_at, store=False)
    return shapes.response_object(response, turn)


RESPONSES = Endpoint(check=_responses_check, request=_responses_request, answer=_responses_answer)

ENDPOINTS: dict[str, Endpoint] = {"/v1/chat/completions": CHAT, "/v1/responses": RESPONSES}


def register(path: str, endpoint: Endpoint) -> None:
    """Another app's endpoint (the Responses API) becomes callable from batches."""
    ENDPOINTS[path] = endpoint
