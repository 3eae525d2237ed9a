"""OpenAI's response shapes, built from our rows: chat.completion and chat.completion.chunk."""

from __future__ import annotations

from typing import Any


def completion_id(turn_id: Any) -> str:
    return f"chatcmpl-{turn_id.hex if hasattr(turn_id, 'hex') else turn_id}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}


def completion(
    *,
    turn_id: Any,
    created: int,
    model: str,
    content: str,
    tool_calls: list[dict],
    finish_reason: str,
    prompt_tokens: int,
    completion_tokens: int,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content if content or not tool_calls else None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": completion_id(turn_id),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def chunk(*, turn_id: Any, created: int, model: str, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {
        "id": completion_id(turn_id),
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
    }


def usage_chunk(*, turn_id: Any, created: int, model: str, usage_: dict[str, int]) -> dict[str, Any]:
    return {
        "id": completion_id(turn_id),
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [],
        "usage": usage_,
    }
