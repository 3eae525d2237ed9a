"""The memory admin: summaries, long-term memories (with a semantic search page and a page that
explains a conversation's next context, piece by piece) and consolidation runs with their progress.

Every admin is tenant-scoped (sentinel_site/admin.py), the search page too: it searches only a
tenant the operator may see.
"""

import uuid

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import render
from django.urls import path

from agents.models import Conversation
from memory import remote, search
from memory.api import context_piece
from memory.context import assemble, recall_query
from memory.models import ConsolidationRun, Memory, Summary
from sentinel_site.admin import BigTableMixin, ReadOnlyAdmin, TenantFilter, visible_tenants


@admin.register(Summary)
class SummaryAdmin(BigTableMixin, ReadOnlyAdmin):
    list_display = ("id", "conversation", "first_seq", "last_seq", "token_count", "source_tokens", "created_at")
    list_filter = (TenantFilter,)
    list_select_related = ("conversation",)
    search_fields = ("=conversation__id", "text")


@admin.register(Memory)
class MemoryAdmin(BigTableMixin, ReadOnlyAdmin):
    """Long-term memory, with a semantic search page (the query is embedded by a worker)."""

    deletable = True  # as DELETE /v1/memory/{id}: forgets the embedding, the message stays in history
    list_display = ("short_text", "kind", "role", "tenant", "conversation", "occurred_at")
    list_filter = ("kind", "in_hnsw", TenantFilter)
    list_select_related = ("tenant", "conversation")
    search_fields = ("text",)
    exclude = ("embedding",)
    change_list_template = "admin/memory/memory/change_list.html"

    @admin.display(description="text")
    def short_text(self, obj: Memory) -> str:
        return obj.text[:90]

    def get_urls(self):
        return [
            path("semantic/", self.admin_site.admin_view(self.semantic_search), name="memory_semantic_search"),
            path("context/", self.admin_site.admin_view(self.explain_context), name="memory_explain_context"),
            *super().get_urls(),
        ]

    def explain_context(self, request):
        """What the conversation's next turn would be sent, and why each recalled piece was chosen
        (as GET /v1/conversations/{id}/context), for a conversation of a tenant the operator may see."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        conversation_id, query = request.GET.get("conversation", "").strip(), request.GET.get("query", "").strip() or None
        page = {**self.admin_site.each_context(request), "title": "Explain a context", "opts": self.model._meta}
        page.update(conversation_id=conversation_id, query=query or "")
        if conversation_id:
            try:
                found = Conversation.objects.select_related("agent").filter(id=uuid.UUID(conversation_id))
            except ValueError:
                raise Http404("No such conversation.")
            conversation = found.filter(tenant__in=visible_tenants(request)).first()
            if conversation is None:
                raise Http404("No such conversation.")  # another tenant's and none at all look the same
            texts = [query] if query else recall_query(conversation)
            try:
                vectors = remote.embed_texts_sync(texts, conversation.tenant_id) if texts else []
            except Exception as exc:  # noqa: BLE001 - shown to the operator; the context without recall
                messages.error(request, f"Query embedding failed, recall left out: {exc}")
                vectors = []
            context = assemble(conversation, query=query, embed=(lambda _: vectors) if vectors else None)
            page.update(context=context, pieces=[context_piece(p) for p in context.pieces], budget=conversation.agent.context_budget)
        return render(request, "admin/memory/context.html", page)

    def semantic_search(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        query, tenant_id, hits = request.GET.get("q", "").strip(), request.GET.get("tenant", ""), []
        if tenant_id:
            # Another tenant's id and an id that exists nowhere get the same answer.
            try:
                tenant = uuid.UUID(tenant_id)
            except ValueError:
                raise Http404("No such tenant.")
            if not visible_tenants(request).filter(id=tenant).exists():
                raise Http404("No such tenant.")
        if query and tenant_id:
            try:
                hits = search.search(tenant_id, remote.embed_texts_sync([query], tenant)[0], k=20)
            except Exception as exc:  # noqa: BLE001 - shown to the operator
                messages.error(request, f"Search failed: {exc}")
        context = {
            **self.admin_site.each_context(request),
            "title": "Semantic memory search",
            "tenants": visible_tenants(request).order_by("name"),
            "query": query,
            "tenant_id": tenant_id,
            "hits": hits,
            "opts": self.model._meta,
        }
        return render(request, "admin/memory/semantic_search.html", context)


@admin.register(ConsolidationRun)
class ConsolidationRunAdmin(BigTableMixin, ReadOnlyAdmin):
    list_display = ("created_at", "conversation", "status", "stage", "progress", "trigger", "message_count", "facts", "duration_ms")
    list_filter = ("status", "trigger", TenantFilter)
    list_select_related = ("conversation",)

    @admin.display(description="consolidated")
    def progress(self, obj: ConsolidationRun) -> str:
        """The conversation's messages consolidated of all it has, as the run left it."""
        return f"{obj.consolidated_messages} of {obj.total_messages}" if obj.total_messages else ""
