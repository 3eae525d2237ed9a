"""The Responses API's typed stream events, built from a turn's live stream.

The same turn stream always gives the same events with the same `sequence_number`s, so a client
that reconnects with `starting_after=N` (GET /v1/responses/{id}?stream=true) gets exactly the
events after N: the builder replays the turn's stream from its start and skips what was sent.
"""

from __future__ import annotations

from typing import Any

from agents.models import Turn


class EventBuilder:
    """Numbers and shapes the events of one response's stream, in OpenAI's order."""

    def __init__(self, turn: Turn) -> None:
        self.turn = turn
        self.seq = -1
        self.text_open = False
        self.text = ""

    def _event(self, kind: str, **data: Any) -> dict[str, Any]:
        self.seq += 1
        return {"type": kind, "sequence_number": self.seq, **data}

    def start(self, created: dict[str, Any], in_progress: dict[str, Any]) -> list[dict[str, Any]]:
        return [self._event("response.created", response=created), self._event("response.in_progress", response=in_progress)]

    def delta(self, content: str | None) -> list[dict[str, Any]]:
        if not content:
            return []
        events = self._open_text()
        self.text += content
        item_id = f"msg_{self.turn.id.hex}"
        events.append(
            self._event("response.output_text.delta", item_id=item_id, output_index=0, content_index=0, delta=content, logprobs=[])
        )
        return events

    def _open_text(self) -> list[dict[str, Any]]:
        if self.text_open:
            return []
        self.text_open = True
        item_id = f"msg_{self.turn.id.hex}"
        item = {"type": "message", "id": item_id, "status": "in_progress", "role": "assistant", "content": []}
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        return [
            self._event("response.output_item.added", output_index=0, item=item),
            self._event("response.content_part.added", item_id=item_id, output_index=0, content_index=0, part=part),
        ]

    def done(self, final: dict[str, Any]) -> list[dict[str, Any]]:
        """The final response object (completed): close the text, then every function call, then completed."""
        events: list[dict[str, Any]] = []
        for index, item in enumerate(final["output"]):
            if item["type"] == "message":
                text = "".join(part["text"] for part in item["content"])
                if not self.text_open and text:
                    events += self.delta(text)
                elif not self.text_open:
                    events += self._open_text()
                part = item["content"][0] if item["content"] else {"type": "output_text", "text": "", "annotations": []}
                events.append(
                    self._event(
                        "response.output_text.done", item_id=item["id"], output_index=index, content_index=0, text=text, logprobs=[]
                    )
                )
                events.append(self._event("response.content_part.done", item_id=item["id"], output_index=index, content_index=0, part=part))
                events.append(self._event("response.output_item.done", output_index=index, item=item))
            elif item["type"] == "function_call":
                events.append(
                    self._event("response.output_item.added", output_index=index, item={**item, "arguments": "", "status": "in_progress"})
                )
                events.append(
                    self._event("response.function_call_arguments.delta", item_id=item["id"], output_index=index, delta=item["arguments"])
                )
                events.append(
                    self._event(
                        "response.function_call_arguments.done", item_id=item["id"], output_index=index, arguments=item["arguments"]
                    )
                )
                events.append(self._event("response.output_item.done", output_index=index, item=item))
        events.append(self._event("response.completed", response=final))
        return events

    def failed(self, final: dict[str, Any]) -> list[dict[str, Any]]:
        return [self._event("response.failed", response=final)]
