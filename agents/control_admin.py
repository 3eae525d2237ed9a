"""Control of running work in the admin: cancel, interrupt and resume turns (actions on the turn list,
mixed into agents/admin.py's TurnAdmin), and the approvals waiting for a person, approved or denied
from their own list. The rules are agents/control.py's and agents/approvals.py's; each action is
audited with the operator as its actor and needs the change permission of its model."""

from __future__ import annotations

from django.contrib import admin, messages

from agents import approvals, control
from agents.models import Approval, ApprovalStatus, Stop
from agents.tasks import enqueue_turn
from budgets import audit
from sentinel_site.admin import ReadOnlyAdmin, TenantFilter

MAX_CONTROLLED = 200  # turns one action stops or resumes at most


class TurnControlAdminMixin:
    """For a Turn admin (read-only otherwise): cancel, interrupt and resume as actions."""

    def get_actions(self, request):
        actions = super().get_actions(request)  # type: ignore[misc]
        if request.user.has_perm("agents.change_turn"):
            for name in ("cancel_selected", "interrupt_selected", "resume_selected"):
                action = getattr(TurnControlAdminMixin, name)
                actions[name] = (action, name, action.short_description)
        return actions

    def _stop(self, request, queryset, kind: Stop) -> None:
        actor, done, skipped = audit.actor_for_user(request.user), 0, 0
        for turn in queryset[:MAX_CONTROLLED]:
            try:
                stopped = control.request_stop(turn.id, tenant_id=turn.tenant_id, kind=kind, actor=actor)
            except control.TurnAlreadyFinished:
                skipped += 1
                continue
            if stopped.following is not None:
                enqueue_turn(stopped.following)
            done += 1
        self.message_user(request, f"Asked {done} turn(s) to {kind}; {skipped} had already ended.")  # type: ignore[attr-defined]

    @admin.action(description="Cancel the selected turns")
    def cancel_selected(self, request, queryset) -> None:
        self._stop(request, queryset, Stop.CANCEL)

    @admin.action(description="Interrupt the selected turns (resumable)")
    def interrupt_selected(self, request, queryset) -> None:
        self._stop(request, queryset, Stop.INTERRUPT)

    @admin.action(description="Resume the selected interrupted turns")
    def resume_selected(self, request, queryset) -> None:
        actor, done, skipped = audit.actor_for_user(request.user), 0, 0
        for turn in queryset[:MAX_CONTROLLED]:
            try:
                control.resume(turn.id, tenant_id=turn.tenant_id, actor=actor)
            except control.NotResumable:
                skipped += 1
                continue
            enqueue_turn(turn.id)
            done += 1
        self.message_user(request, f"Resumed {done} turn(s); {skipped} were not interrupted.")  # type: ignore[attr-defined]


@admin.register(Approval)
class ApprovalAdmin(ReadOnlyAdmin):
    """Tool calls held for a person: approve or deny them here (or POST /v1/approvals/{id})."""

    list_display = ("created_at", "tenant", "turn", "status", "tools", "expires_at", "decided_by", "decided_at")
    list_filter = ("status", TenantFilter)
    list_select_related = ("tenant", "turn")
    raw_id_fields = ("turn",)
    search_fields = ("=id", "=turn__id")

    @admin.display(description="tools")
    def tools(self, obj: Approval) -> str:
        return ", ".join((call.get("function") or {}).get("name", "?") for call in obj.tool_calls or [])

    def get_actions(self, request):
        actions = super().get_actions(request)
        if request.user.has_perm("agents.change_approval"):
            for name in ("approve_selected", "deny_selected"):
                action = getattr(ApprovalAdmin, name)
                actions[name] = (action, name, action.short_description)
        return actions

    def _decide(self, request, queryset, approve: bool) -> None:
        actor, done, skipped = audit.actor_for_user(request.user), 0, 0
        verb = "Approved" if approve else "Denied"
        for approval in queryset.filter(status=ApprovalStatus.PENDING)[:MAX_CONTROLLED]:
            try:
                decision = approvals.decide(
                    approval.id,
                    tenant_id=approval.tenant_id,
                    approve=approve,
                    actor=actor,
                    reason=f"{verb} in the admin.",
                )
            except approvals.ApprovalNotPending:
                skipped += 1
                continue
            for turn_id in (decision.following, decision.requeued):
                if turn_id is not None:
                    enqueue_turn(turn_id)
            done += 1
        level = messages.SUCCESS if done else messages.WARNING
        self.message_user(
            request, f"{'Approved' if approve else 'Denied'} {done} approval(s); {skipped} were decided already.", level=level
        )

    @admin.action(description="Approve the selected tool calls")
    def approve_selected(self, request, queryset) -> None:
        self._decide(request, queryset, True)

    @admin.action(description="Deny the selected tool calls (the model is told)")
    def deny_selected(self, request, queryset) -> None:
        self._decide(request, queryset, False)
