from django.contrib import admin, messages
from django.shortcuts import render
from django.urls import path

from budgets.models import Tenant
from memory import remote, search
from memory.models import ConsolidationRun, Memory, Summary


class ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Summary)
class SummaryAdmin(ReadOnly):
    list_display = ("id", "conversation", "first_seq", "last_seq", "token_count", "source_tokens", "created_at")
    list_select_related = ("conversation",)
    raw_id_fields = ("conversation",)
    search_fields = ("=conversation__id", "text")
    show_full_result_count = False


@admin.register(Memory)
class MemoryAdmin(ReadOnly):
    """Long-term memory, with a semantic search page (the query is embedded by a worker)."""

    list_display = ("short_text", "kind", "role", "tenant", "conversation", "occurred_at")
    list_filter = ("kind", "tenant")
    list_select_related = ("tenant", "conversation")
    raw_id_fields = ("conversation", "message", "summary", "agent")
    search_fields = ("text",)
    exclude = ("embedding",)
    show_full_result_count = False
    change_list_template = "admin/memory/memory/change_list.html"

    @admin.display(description="text")
    def short_text(self, obj: Memory) -> str:
        return obj.text[:90]

    def get_urls(self):
        return [path("semantic/", self.admin_site.admin_view(self.semantic_search), name="memory_semantic_search"), *super().get_urls()]

    def semantic_search(self, request):
        tenants = Tenant.objects.order_by("name")
        query, tenant_id, hits = request.GET.get("q", "").strip(), request.GET.get("tenant", ""), []
        if query and tenant_id:
            try:
                hits = search.search(tenant_id, remote.embed_texts_sync([query])[0], k=20)
            except Exception as exc:  # noqa: BLE001 - shown to the operator
                messages.error(request, f"Search failed: {exc}")
        context = {
            **self.admin_site.each_context(request),
            "title": "Semantic memory search",
            "tenants": tenants,
            "query": query,
            "tenant_id": tenant_id,
            "hits": hits,
            "opts": self.model._meta,
        }
        return render(request, "admin/memory/semantic_search.html", context)


@admin.register(ConsolidationRun)
class ConsolidationRunAdmin(ReadOnly):
    list_display = ("created_at", "conversation", "status", "trigger", "message_count", "source_tokens", "duration_ms")
    list_filter = ("status", "trigger")
    list_select_related = ("conversation",)
    raw_id_fields = ("conversation", "summary")
