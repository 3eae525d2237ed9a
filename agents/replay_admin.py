"""The replay in the admin: a "Replay" action on turns and the replay report on a turn's page
(agents/replay.py). Mixed into agents/admin.py's TurnAdmin. A replay only reads (no model call, no
spend), so viewing a turn is permission enough; query embeddings come from a worker, as for the
web process everywhere (memory/remote.py)."""

from __future__ import annotations

import json
from functools import partial

from django.contrib import admin, messages
from django.utils.html import format_html

from agents import replay
from agents.models import Turn
from memory import remote

MAX_REPLAYED = 100  # turns one action replays at most


def report_for(turn: Turn) -> dict:
    """The turn's replay report, or why there is none."""
    if turn.conversation_id and turn.agent_id:
        turn.conversation.agent = turn.agent
    try:
        return replay.replay(turn, embed=partial(remote.embed_texts_sync, tenant=turn.tenant_id)).as_dict()
    except replay.NotReplayable as refused:
        return {"object": "turn.replay", "turn": str(turn.id), "replayable": False, "why": refused.message}
    except remote.EmbeddingsUnavailable as unavailable:
        return {"object": "turn.replay", "turn": str(turn.id), "replayable": False, "why": str(unavailable)}


class ReplayAdminMixin:
    """For a Turn admin: the replay action and the `replay_report` field on the turn's page."""

    def get_readonly_fields(self, request, obj=None):
        fields = tuple(super().get_readonly_fields(request, obj))
        return (*fields, "replay_report") if obj is not None and "replay_report" not in fields else fields

    def get_actions(self, request):
        actions = super().get_actions(request)
        if self.has_view_permission(request):
            action = ReplayAdminMixin.replay_selected
            actions["replay_selected"] = (action, "replay_selected", action.short_description)
        return actions

    @admin.display(description="replay report")
    def replay_report(self, obj: Turn) -> str:
        report = report_for(obj)
        if report.get("replayable") is False:
            headline = f"Not replayable: {report['why']}"
        elif report["identical"]:
            headline = "Identical: the context assembled now and the outcome computed from the recorded answer equal the recording."
        else:
            headline = f"{len(report['divergences'])} divergence(s), {len(report['unreproducible'])} unreproducible."
        return format_html("<p>{}</p><pre>{}</pre>", headline, json.dumps(report, indent=2, default=str))

    @admin.action(description="Replay the selected turns (no model call)")
    def replay_selected(self, request, queryset) -> None:
        identical, diverged, skipped = 0, [], 0
        for turn in queryset.select_related("agent", "conversation")[:MAX_REPLAYED]:
            report = report_for(turn)
            if report.get("replayable") is False:
                skipped += 1
            elif report["identical"]:
                identical += 1
            else:
                diverged.append(str(turn.id))
        level = messages.WARNING if diverged else messages.SUCCESS
        text = f"Replayed {identical + len(diverged)} turn(s): {identical} identical, {len(diverged)} diverged, {skipped} not replayable."
        if diverged:
            text += " Diverged: " + ", ".join(diverged[:20]) + " (each turn's page shows its report)."
        self.message_user(request, text, level=level)
