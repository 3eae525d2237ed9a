"""The agents admin: agents (their provider key write-only), conversations, messages, turns and their events,
dead letters; approvals and the turn control actions are agents/control_admin.py's. Every admin is
tenant-scoped (sentinel_site/admin.py)."""

from django import forms
from django.contrib import admin
from django.utils.html import format_html, format_html_join

from agents import deadletters
from agents.control_admin import TurnControlAdminMixin
from agents.models import Agent, Conversation, DeadLetter, Message, Turn, TurnEventRecord
from agents.replay_admin import ReplayAdminMixin
from agents.tasks import enqueue_turn
from agents.timeline_admin import TurnTimelineAdminMixin
from budgets import audit
from memory import imports
from sentinel_site import charts, money
from sentinel_site.admin import BigTableMixin, ReadOnlyAdmin, ReadOnlyInline, TenantConsistentForm, TenantFilter, TenantScopedAdmin

WRITE_ONLY_FIELDS = ("new_provider_api_key", "clear_provider_api_key")


class AgentForm(TenantConsistentForm):
    """The agent form, with the provider key write-only: it is never rendered, only replaced or cleared.

    The new key is put on the instance before the model's own validation (Agent.clean) runs, so
    the provider rules at the model see the key and the base URL of this save together.
    """

    new_provider_api_key = forms.CharField(
        label="New provider API key",
        required=False,
        max_length=500,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Write-only: the stored key is never shown. Blank keeps it.",
    )
    clear_provider_api_key = forms.BooleanField(label="Clear the provider API key", required=False)

    class Meta:
        model = Agent
        exclude = ("provider_api_key",)

    def clean(self):
        cleaned = super().clean()
        new, clear = cleaned.get("new_provider_api_key"), cleaned.get("clear_provider_api_key")
        if new and clear:
            self.add_error("clear_provider_api_key", "Set a new key or clear it, not both.")
        elif new:
            self.instance.provider_api_key = new
        elif clear:
            self.instance.provider_api_key = ""
        return cleaned


@admin.register(Agent)
class AgentAdmin(TenantScopedAdmin):
    form = AgentForm
    list_display = ("name", "tenant", "model", "specialization", "has_provider_api_key", "updated_at")
    list_filter = (TenantFilter,)
    list_select_related = ("tenant",)
    search_fields = ("name", "specialization")
    readonly_fields = ("has_provider_api_key",)
    fieldsets = (
        (None, {"fields": ("tenant", "name", "system_prompt", "model", "specialization", "default_params")}),
        ("Provider", {"fields": ("provider_base_url", "has_provider_api_key", *WRITE_ONLY_FIELDS)}),
        (
            "Memory",
            {"fields": ("context_budget", "short_term_messages", "short_term_tokens", "recall_limit", "consolidation_threshold")},
        ),
        ("Control", {"fields": ("multitask_strategy", "requires_approval")}),
    )

    @admin.display(boolean=True, description="own provider key")
    def has_provider_api_key(self, obj: Agent) -> bool:
        return bool(obj.provider_api_key)

    def get_fieldsets(self, request, obj=None):
        if self.has_change_permission(request, obj) or (obj is None and self.has_add_permission(request)):
            return self.fieldsets
        # A view-only page shows fields as text; the write-only ones have no value to show.
        return [(name, {**opts, "fields": [f for f in opts["fields"] if f not in WRITE_ONLY_FIELDS]}) for name, opts in self.fieldsets]


@admin.register(Conversation)
class ConversationAdmin(BigTableMixin, TenantScopedAdmin):
    list_display = ("id", "tenant", "agent", "title", "last_seq", "created_at")
    list_filter = (TenantFilter,)
    list_select_related = ("tenant", "agent")
    raw_id_fields = ("agent",)
    search_fields = ("=id", "title")
    readonly_fields = ("history_imports",)

    @admin.display(description="history imports")
    def history_imports(self, obj: Conversation):
        # Imported messages are in the history at once; embedding them into long-term memory is the long part.
        found = imports.recent(obj.id) if obj.pk else []
        if not found:
            return "none"
        rows = format_html_join(
            "", "<li>import {} {}</li>", ((p.seq, charts.progress(p.processed, 0, p.total, state=p.state)) for p in found)
        )
        return format_html('<ul class="sentinel-imports">{}</ul>', rows)


@admin.register(Message)
class MessageAdmin(BigTableMixin, ReadOnlyAdmin):
    list_display = ("id", "conversation", "seq", "index", "role", "short_content", "created_at")
    list_filter = ("role", TenantFilter)
    raw_id_fields = ("conversation", "turn")
    search_fields = ("=conversation__id",)

    @admin.display(description="content")
    def short_content(self, obj: Message) -> str:
        return obj.content[:80]


class TurnEventInline(ReadOnlyInline):
    model = TurnEventRecord
    fields = ("attempt", "seq", "kind", "from_state", "to_state", "payload", "created_at")
    readonly_fields = fields


@admin.register(Turn)
class TurnAdmin(TurnControlAdminMixin, ReplayAdminMixin, TurnTimelineAdminMixin, BigTableMixin, ReadOnlyAdmin):
    list_display = ("id", "tenant", "agent", "status", "agent_state", "attempt", "total_tokens", "cost_text", "latency_ms", "created_at")
    list_filter = ("status", TenantFilter)
    list_select_related = ("tenant", "agent")
    search_fields = ("=id", "=conversation__id")
    inlines = [TurnEventInline]

    @admin.display(description="cost", ordering="cost")
    def cost_text(self, obj: Turn) -> str:
        return money.money(obj.cost)


@admin.register(TurnEventRecord)
class TurnEventAdmin(BigTableMixin, ReadOnlyAdmin):
    """Every turn's event log in one table (a turn's own page lists its events too)."""

    tenant_path = "turn__tenant"
    list_display = ("turn", "attempt", "seq", "kind", "from_state", "to_state", "created_at")
    list_filter = (TenantFilter,)
    list_select_related = ("turn",)
    search_fields = ("=turn__id",)


@admin.register(DeadLetter)
class DeadLetterAdmin(TenantScopedAdmin):
    """Turns given up on, with a re-drive action that queues them again."""

    list_display = ("created_at", "tenant", "turn", "reason", "attempts", "redriven_at")
    list_filter = ("reason", TenantFilter)
    list_select_related = ("tenant", "turn")
    readonly_fields = ("tenant", "turn", "reason", "attempts", "last_error", "created_at", "redriven_at")
    actions = ["redrive"]

    def has_add_permission(self, request):
        return False

    @admin.action(description="Re-drive the selected turns", permissions=["change"])
    def redrive(self, request, queryset):
        count = 0
        for letter in queryset:
            if deadletters.redrive(letter, actor=audit.actor_for_user(request.user)):
                enqueue_turn(letter.turn_id)
                count += 1
        self.message_user(request, f"Re-driven {count} turn(s).")
