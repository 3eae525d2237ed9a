"""A conversation's messages as OpenAI's Conversations API items, and keyset pages over them.

One message can be several items: an assistant message with text and tool calls is a message item
followed by a function_call item per call; a tool message is a function_call_output item.
"""

from __future__ import annotations

import uuid
from typing import Any

from agents.models import Message


def item_ids(message: Message) -> list[str]:
    return [item["id"] for item in items_of(message)]


def items_of(message: Message) -> list[dict[str, Any]]:
    hex_id = message.id.hex
    if message.role == "tool":
        return [
            {
                "type": "function_call_output",
                "id": f"fco_{hex_id}",
                "call_id": message.tool_call_id,
                "output": message.content,
                "status": "completed",
            }
        ]
    items = []
    if message.content or not message.tool_calls:
        kind = "output_text" if message.role == "assistant" else "input_text"
        part: dict[str, Any] = {"type": kind, "text": message.content}
        if kind == "output_text":
            part["annotations"] = []
        items.append({"type": "message", "id": f"msg_{hex_id}", "role": message.role, "status": "completed", "content": [part]})
    for index, call in enumerate(message.tool_calls or []):
        function = call.get("function") or {}
        items.append(
            {
                "type": "function_call",
                "id": f"fc_{hex_id}_{index}",
                "call_id": call.get("id", ""),
                "name": function.get("name", ""),
                "arguments": function.get("arguments", ""),
                "status": "completed",
            }
        )
    return items


def message_id(item_id: str) -> uuid.UUID | None:
    """The message behind an item id, or None if it names none."""
    for prefix in ("msg_", "fco_", "fc_"):
        if item_id.startswith(prefix):
            try:
                return uuid.UUID(hex=item_id[len(prefix) :].split("_")[0])
            except ValueError:
                return None
    return None
