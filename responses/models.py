"""A response: the Responses API's view of one turn (what was asked, in its shape), kept beside the turn.

The turn holds everything that happened (state, events, usage, the reply message, budget and audit);
this row holds what only the Responses API knows: the input items as sent, instructions, tools,
text format, metadata, store/background, and the response it continued.
"""

from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone

from budgets.models import ApiKey, Tenant


def _auto() -> str:
    return "auto"


class Response(models.Model):
    """One `POST /v1/responses`, answered by its turn."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    turn = models.OneToOneField("agents.Turn", on_delete=models.CASCADE, related_name="+")
    previous_response = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    conversation_given = models.BooleanField(default=False, help_text="The request named its conversation (`conversation`).")
    model = models.CharField(max_length=200, help_text="The agent's name, as the request sent it.")
    instructions = models.TextField(null=True, blank=True)  # noqa: DJ001 - null is OpenAI's "none given"
    input_items = models.JSONField(default=list, help_text="The input as items, in the Responses API's shape.")
    tools = models.JSONField(default=list, blank=True)
    tool_choice = models.JSONField(default=_auto, blank=True)
    text = models.JSONField(default=dict, blank=True)
    params = models.JSONField(default=dict, blank=True, help_text="temperature, top_p, max_output_tokens, parallel_tool_calls")
    metadata = models.JSONField(default=dict, blank=True)
    store = models.BooleanField(default=True)
    background = models.BooleanField(default=False)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["tenant", "-created_at"], name="response_tenant_recent")]

    def __str__(self) -> str:
        return self.api_id

    @property
    def api_id(self) -> str:
        return f"resp_{self.id.hex}"
