"""A turn's admin page as its story: the timeline (agents/timeline.py) above its fields, with links
to its conversation, its messages, its run and its dead letter. Mixed into agents/admin.py's
TurnAdmin; the page's template is templates/admin/agents/turn/change_form.html."""

from __future__ import annotations

from django.urls import reverse

from agents.models import DeadLetter, Turn
from agents.timeline import timeline
from runs.models import Step


class TurnTimelineAdminMixin:
    """For a Turn admin: the timeline and the links in the change (view) page's context."""

    def change_view(self, request, object_id, form_url="", extra_context=None):
        turn = self.get_object(request, object_id)  # type: ignore[attr-defined]
        if turn is not None:
            extra_context = {**(extra_context or {}), "timeline": timeline(turn), "turn_links": self.turn_links(turn)}
        return super().change_view(request, object_id, form_url, extra_context)  # type: ignore[misc]

    def get_fields(self, request, obj=None):
        # The turn's cost as money, like every amount in the admin (TurnAdmin.cost_text).
        return [("cost_text" if name == "cost" else name) for name in super().get_fields(request, obj)]  # type: ignore[misc]

    def turn_links(self, turn: Turn) -> list[tuple[str, str]]:
        links = [("Conversation", reverse("admin:agents_conversation_change", args=[turn.conversation_id]))]
        links.append(("Its messages", reverse("admin:agents_message_changelist") + f"?conversation__id__exact={turn.conversation_id}"))
        for step in Step.objects.filter(turn=turn, tenant_id=turn.tenant_id).only("id", "run_id"):
            links.append((f"Run {str(step.run_id)[:8]}", reverse("admin:runs_run_change", args=[step.run_id])))
        letter = DeadLetter.objects.filter(turn=turn).only("id").first()
        if letter is not None:
            links.append(("Dead letter", reverse("admin:agents_deadletter_change", args=[letter.pk])))
        return links
