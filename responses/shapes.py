"""Responses in OpenAI's shapes, built from the response row and its turn; and the typed stream events."""

from __future__ import annotations

from typing import Any

from agents.models import Message, Turn, TurnStatus
from responses.models import Response

STATUS = {
    TurnStatus.RUNNING: "in_progress",
    TurnStatus.AWAITING_APPROVAL: "in_progress",
    TurnStatus.SUCCEEDED: "completed",
    TurnStatus.FAILED: "failed",
    TurnStatus.CANCELLED: "cancelled",
    TurnStatus.INTERRUPTED: "incomplete",
}


def status(response: Response, turn: Turn) -> str:
    if response.cancelled_at is not None and turn.status in (TurnStatus.FAILED, TurnStatus.CANCELLED):
        return "cancelled"
    if turn.status == TurnStatus.QUEUED:
        return "queued" if response.background else "in_progress"
    return STATUS[TurnStatus(turn.status)]


def message_item(turn: Turn, text: str, *, done: bool = True) -> dict[str, Any]:
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {
        "type": "message",
        "id": f"msg_{turn.id.hex}",
        "status": "completed" if done else "in_progress",
        "role": "assistant",
        "content": [part] if done else [],
    }


def function_call_item(turn: Turn, index: int, call: dict[str, Any], *, done: bool = True) -> dict[str, Any]:
    function = call.get("function") or {}
    return {
        "type": "function_call",
        "id": f"fc_{turn.id.hex}_{index}",
        "call_id": call.get("id", ""),
        "name": function.get("name", ""),
        "arguments": function.get("arguments", "") if done else "",
        "status": "completed" if done else "in_progress",
    }


def output_items(turn: Turn, output: Message | None) -> list[dict[str, Any]]:
    if turn.status != TurnStatus.SUCCEEDED or output is None:
        return []
    items = [message_item(turn, output.content)] if output.content or not output.tool_calls else []
    items += [function_call_item(turn, index, call) for index, call in enumerate(output.tool_calls or [])]
    return items


def usage(turn: Turn) -> dict[str, Any]:
    return {
        "input_tokens": turn.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": turn.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": turn.total_tokens,
    }


def response_object(response: Response, turn: Turn, *, as_status: str | None = None, with_output: bool = True) -> dict[str, Any]:
    """The response object. `as_status` and `with_output=False` give its earlier snapshots, for a stream's first events."""
    current = as_status or status(response, turn)
    error = None
    if current == "failed" and turn.error:
        error = {"code": turn.error.get("code") or "server_error", "message": turn.error.get("message", "")}
    output_text = ""
    items = output_items(turn, turn.output) if with_output else []
    for item in items:
        if item["type"] == "message":
            output_text += "".join(part["text"] for part in item["content"])
    return {
        "id": response.api_id,
        "object": "response",
        "created_at": int(response.created_at.timestamp()),
        "status": current,
        "background": response.background,
        "error": error,
        "incomplete_details": None,
        "instructions": response.instructions,
        "max_output_tokens": response.params.get("max_output_tokens"),
        "model": response.model,
        "output": items,
        "output_text": output_text,
        "parallel_tool_calls": response.params.get("parallel_tool_calls", True),
        "previous_response_id": response.previous_response.api_id if response.previous_response_id else None,
        "conversation": {"id": str(turn.conversation_id)} if response.conversation_given else None,
        "reasoning": {"effort": None, "summary": None},
        "store": response.store,
        "temperature": response.params.get("temperature"),
        "text": response.text or {"format": {"type": "text"}},
        "tool_choice": response.tool_choice,
        "tools": response.tools,
        "top_p": response.params.get("top_p"),
        "truncation": "disabled",
        "usage": usage(turn) if current in ("completed", "failed") and with_output else None,
        "user": None,
        "metadata": response.metadata,
    }


def input_item(response: Response, index: int, item: dict[str, Any]) -> dict[str, Any]:
    """A stored input item as `GET /v1/responses/{id}/input_items` lists it."""
    shaped = dict(item)
    shaped.setdefault("id", f"msg_{response.id.hex}_{index}")
    if shaped["type"] == "message":
        content = shaped.get("content")
        kind = "output_text" if shaped.get("role") == "assistant" else "input_text"
        shaped["content"] = [{"type": kind, "text": content}] if isinstance(content, str) else content
        shaped.setdefault("status", "completed")
    return shaped
