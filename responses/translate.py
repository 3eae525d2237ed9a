"""A Responses API request as the chat request a turn runs: input items to messages, tools, text format.

Pure functions: a request this cannot translate is a `Untranslatable` naming the parameter (the view
answers it 400). The chat request is then validated as any chat completion is (agents.api.schema).
"""

from __future__ import annotations

import uuid
from typing import Any

from agents.admission import ConversationNotFound

MESSAGE_ROLES = ("user", "system", "developer", "assistant")
TEXT_PARTS = ("input_text", "output_text", "text")


class Untranslatable(Exception):
    """A part of a Responses request that has no chat equivalent here."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def input_items(value: Any) -> list[dict[str, Any]]:
    """The input as items: a string is one user message."""
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise Untranslatable("`input` must be a string or a non-empty list of input items.", "input")
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise Untranslatable("Each input item must be an object.", f"input[{index}]")
    return [{"type": item.get("type", "message"), **item} for item in value]


def messages(items: list[dict[str, Any]], instructions: str | None) -> list[dict[str, Any]]:
    """Chat messages for the items; consecutive function calls become one assistant message."""
    out: list[dict[str, Any]] = [{"role": "system", "content": instructions}] if instructions else []
    for index, item in enumerate(items):
        kind = item["type"]
        if kind == "message":
            out.append(_message(item, f"input[{index}]"))
        elif kind == "function_call":
            call = {
                "id": _text(item, "call_id", index),
                "type": "function",
                "function": {"name": _text(item, "name", index), "arguments": _text(item, "arguments", index)},
            }
            if out and out[-1]["role"] == "assistant" and out[-1].get("tool_calls") and not out[-1].get("content"):
                out[-1]["tool_calls"].append(call)
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            out.append(
                {
                    "role": "tool",
                    "tool_call_id": _text(item, "call_id", index),
                    "content": output if isinstance(output, str) else _parts_text(output, f"input[{index}].output"),
                }
            )
        else:
            raise Untranslatable(f"Input items of type `{kind}` are not supported.", f"input[{index}].type")
    return out


def _message(item: dict[str, Any], param: str) -> dict[str, Any]:
    role = item.get("role")
    if role not in MESSAGE_ROLES:
        raise Untranslatable(f"`role` must be one of {', '.join(MESSAGE_ROLES)}.", f"{param}.role")
    content = item.get("content")
    text = content if isinstance(content, str) else _parts_text(content, f"{param}.content")
    return {"role": role, "content": text}


def _parts_text(parts: Any, param: str) -> str:
    if not isinstance(parts, list):
        raise Untranslatable("Content must be a string or a list of text parts.", param)
    texts = []
    for index, part in enumerate(parts):
        if not isinstance(part, dict) or part.get("type") not in TEXT_PARTS or not isinstance(part.get("text"), str):
            raise Untranslatable("Only text content parts (`input_text`, `output_text`) are supported.", f"{param}[{index}]")
        texts.append(part["text"])
    return "".join(texts)


def _text(item: dict[str, Any], field: str, index: int) -> str:
    value = item.get(field)
    if not isinstance(value, str) or (not value and field != "arguments"):
        raise Untranslatable(f"`{field}` must be a string.", f"input[{index}].{field}")
    return value


def tools(value: Any) -> list[dict[str, Any]] | None:
    """Function tools in the chat shape; the hosted tools (web search, files, ...) are not run here."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise Untranslatable("`tools` must be a list.", "tools")
    chat = []
    for index, tool in enumerate(value):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise Untranslatable("Only `function` tools are supported.", f"tools[{index}].type")
        function = {key: tool[key] for key in ("name", "description", "parameters", "strict") if tool.get(key) is not None}
        chat.append({"type": "function", "function": function})
    return chat or None


def tool_choice(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and value.get("type") == "function" and isinstance(value.get("name"), str):
        return {"type": "function", "function": {"name": value["name"]}}
    raise Untranslatable("`tool_choice` must be `none`, `auto`, `required` or a function.", "tool_choice")


def response_format(text: Any) -> dict[str, Any] | None:
    """`text.format` as chat's `response_format` (structured outputs passed through)."""
    if text is None:
        return None
    fmt = text.get("format") if isinstance(text, dict) else None
    if fmt is None:
        return None
    if not isinstance(fmt, dict) or fmt.get("type") not in ("text", "json_object", "json_schema"):
        raise Untranslatable("`text.format.type` must be text, json_object or json_schema.", "text.format.type")
    if fmt["type"] != "json_schema":
        return {"type": fmt["type"]}
    schema = {key: fmt[key] for key in ("name", "schema", "strict", "description") if key in fmt}
    return {"type": "json_schema", "json_schema": schema}


def conversation_id(value: Any) -> uuid.UUID | None:
    """`conversation`: an id, or `{"id": ...}`; ours are UUIDs (optionally as `conv_<hex>`)."""
    if value is None:
        return None
    raw = value.get("id") if isinstance(value, dict) else value
    if not isinstance(raw, str):
        raise Untranslatable('`conversation` must be a conversation id or {"id": ...}.', "conversation")
    try:
        return uuid.UUID(raw.removeprefix("conv_"))
    except ValueError:
        raise ConversationNotFound from None


def chat_request(body: dict[str, Any], items: list[dict[str, Any]], conversation: uuid.UUID | None) -> dict[str, Any]:
    """The chat completion request (before its validation) the turn runs."""
    chat: dict[str, Any] = {
        "model": body["model"],
        "messages": messages(items, body.get("instructions")),
        "stream": bool(body.get("stream")),
    }
    if conversation is not None:
        chat["conversation"] = str(conversation)
    for ours, theirs in (
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("max_output_tokens", "max_tokens"),
        ("parallel_tool_calls", "parallel_tool_calls"),
        ("user", "user"),
    ):
        if body.get(ours) is not None:
            chat[theirs] = body[ours]
    if (chat_tools := tools(body.get("tools"))) is not None:
        chat["tools"] = chat_tools
    if body.get("tool_choice") is not None:
        chat["tool_choice"] = tool_choice(body["tool_choice"])
    if (fmt := response_format(body.get("text"))) is not None:
        chat["response_format"] = fmt
    return chat
