from django.contrib import admin

from agents.models import Agent, Conversation, DeadLetter, Message, Turn, TurnEventRecord


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = ("name", "tenant", "model", "specialization", "updated_at")
    list_filter = ("tenant",)
    list_select_related = ("tenant",)
    search_fields = ("name", "specialization")


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ("id", "tenant", "agent", "title", "last_seq", "created_at")
    list_filter = ("tenant",)
    list_select_related = ("tenant", "agent")
    raw_id_fields = ("agent",)
    search_fields = ("=id", "title")


@admin.register(Message)
class MessageAdmin(ReadOnlyAdmin):
    list_display = ("id", "conversation", "seq", "index", "role", "short_content", "created_at")
    list_filter = ("role",)
    raw_id_fields = ("conversation", "turn")
    search_fields = ("=conversation__id",)
    show_full_result_count = False

    @admin.display(description="content")
    def short_content(self, obj: Message) -> str:
        return obj.content[:80]


class TurnEventInline(admin.TabularInline):
    model = TurnEventRecord
    fields = ("attempt", "seq", "kind", "from_state", "to_state", "payload", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Turn)
class TurnAdmin(ReadOnlyAdmin):
    list_display = ("id", "tenant", "agent", "status", "agent_state", "attempt", "total_tokens", "latency_ms", "created_at")
    list_filter = ("status", "tenant")
    list_select_related = ("tenant", "agent")
    search_fields = ("=id", "=conversation__id")
    inlines = [TurnEventInline]
    show_full_result_count = False


@admin.register(DeadLetter)
class DeadLetterAdmin(admin.ModelAdmin):
    """Turns given up on, with a re-drive action that queues them again."""

    list_display = ("created_at", "tenant", "turn", "reason", "attempts", "redriven_at")
    list_filter = ("reason", "tenant")
    list_select_related = ("tenant", "turn")
    raw_id_fields = ("turn",)
    readonly_fields = ("tenant", "turn", "reason", "attempts", "last_error", "created_at", "redriven_at")
    actions = ["redrive"]

    def has_add_permission(self, request):
        return False

    @admin.action(description="Re-drive the selected turns")
    def redrive(self, request, queryset):
        from agents import deadletters
        from agents.tasks import enqueue_turn

        count = 0
        for letter in queryset:
            if deadletters.redrive(letter, actor=f"user:{request.user.get_username()}"):
                enqueue_turn(letter.turn_id)
                count += 1
        self.message_user(request, f"Re-driven {count} turn(s).")
