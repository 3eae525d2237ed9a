"""The memory API: what memory keeps of a conversation (its messages, listed or imported or one
forgotten; its summaries; a consolidation now; the next turn's context), and long-term memory
(search, forgetting one memory). Registered by memory/urls.py.

Everything is scoped to the caller's tenant; an id of another tenant's object answers 404. The
conversation resource itself (list, read, create) is the agents app's (agents/api/resources.py).
"""

from __future__ import annotations

import uuid
from functools import partial

from adrf.views import APIView as AsyncAPIView
from asgiref.sync import sync_to_async
from django.db import transaction
from django.db.models import Count, F, Q
from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from agents.api.resources import ConversationScoped
from agents.api.serializers import ChatMessageSerializer, MessageSerializer
from agents.models import Agent, Conversation, Message
from budgets import audit, roles
from memory import dreamer, forget, imports, indexing, limits, remote, search
from memory.context import assemble
from memory.models import ConsolidationRun, Memory, Summary
from memory.tasks import consolidate as consolidate_task
from memory.tasks import schedule_indexing
from sentinel_site import strict
from sentinel_site.errors import ApiError, not_found
from sentinel_site.pagination import CursorPagination
from sentinel_site.params import IntegerParam, TextParam

MAX_IMPORT = 1000


class ImportMessageSerializer(ChatMessageSerializer):
    client_id = strict.CharField(max_length=200, required=False, allow_blank=False)
    timestamp = serializers.DateTimeField(required=False)


class ImportSerializer(serializers.Serializer):
    messages = ImportMessageSerializer(many=True, allow_empty=False, max_length=MAX_IMPORT)

    def validate_messages(self, value):
        client_ids = [m["client_id"] for m in value if m.get("client_id")]
        if len(client_ids) != len(set(client_ids)):
            raise serializers.ValidationError("client_id values must be unique within a request")
        return value


class ImportProgressSerializer(serializers.Serializer):
    """How far a history import got (memory/imports.py)."""

    object = serializers.CharField(default="conversation.import")
    id = serializers.IntegerField(help_text="The import's seq in its conversation.")
    conversation = serializers.UUIDField()
    state = serializers.ChoiceField(choices=[imports.INDEXING, imports.COMPLETED])
    total = serializers.IntegerField(help_text="Messages the import stored (all in the history at once).")
    processed = serializers.IntegerField(help_text="Of those, the messages in long-term memory (embedded in the background).")
    url = serializers.CharField()


class ImportedMessageSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    client_id = serializers.CharField(allow_null=True)


class ImportResultSerializer(serializers.Serializer):
    object = serializers.CharField(default="list")
    seq = serializers.IntegerField()
    data = ImportedMessageSerializer(many=True)
    # "import" is a Python keyword: declared below under its API name.


ImportResultSerializer._declared_fields["import"] = ImportProgressSerializer(help_text="Its progress; poll its `url`.")


class SummarySerializer(serializers.ModelSerializer):
    class Meta:
        model = Summary
        fields = ["id", "text", "token_count", "source_message_ids", "first_seq", "last_seq", "source_tokens", "model", "created_at"]


class ConsolidationRunSerializer(serializers.ModelSerializer):
    """One consolidation step, with its progress: the stage it is at and the conversation's
    messages consolidated of all it has."""

    class Meta:
        model = ConsolidationRun
        fields = [
            "id",
            "status",
            "stage",
            "trigger",
            "message_count",
            "consolidated_messages",
            "total_messages",
            "facts",
            "source_tokens",
            "prompt_tokens",
            "completion_tokens",
            "prompt_ms",
            "duration_ms",
            "error",
            "created_at",
            "finished_at",
        ]


def progress(conversation: Conversation) -> dict:
    """The conversation's messages consolidated of all it has (one aggregate)."""
    counts = Message.objects.filter(conversation=conversation).aggregate(
        total=Count("id"), consolidated=Count("id", filter=Q(summary__isnull=False))
    )
    return {"consolidated_messages": counts["consolidated"], "total_messages": counts["total"]}


def tenant_conversation(request, conversation_id) -> Conversation:
    return get_object_or_404(Conversation.objects.select_related("agent"), id=conversation_id, tenant=request.user.tenant)


def import_messages(request, conversation: Conversation) -> Response:
    """POST /v1/conversations/{id}/messages: append up to 1,000 messages without running a turn."""
    data = ImportSerializer(data=request.data)
    data.is_valid(raise_exception=True)
    items = data.validated_data["messages"]
    client_ids = [m["client_id"] for m in items if m.get("client_id")]
    with transaction.atomic():
        taken = list(Message.objects.filter(conversation=conversation, client_id__in=client_ids).values_list("client_id", flat=True)[:5])
        if taken:
            raise ApiError(
                409,
                f"These client_id values already exist in this conversation: {', '.join(taken)}.",
                param="messages",
                code="duplicate_client_id",
            )
        Conversation.objects.filter(id=conversation.id).update(last_seq=F("last_seq") + 1)
        seq = Conversation.objects.values_list("last_seq", flat=True).get(id=conversation.id)
        created = Message.objects.bulk_create(
            Message.from_openai(
                m,
                tenant=conversation.tenant,
                conversation=conversation,
                seq=seq,
                index=index,
                client_id=m.get("client_id", ""),
                **({"occurred_at": m["timestamp"]} if m.get("timestamp") else {}),
            )
            for index, m in enumerate(items)
        )
        transaction.on_commit(schedule_indexing)
    progress = imports.ImportProgress(conversation.id, seq, total=len(created), processed=0)  # indexed after the commit
    return Response(
        {
            "object": "list",
            "seq": seq,
            "data": [{"id": str(m.id), "client_id": m.client_id or None} for m in created],
            "import": progress.as_dict(),
        },
        status=status.HTTP_201_CREATED,
    )


class ForgottenDeletedSerializer(serializers.Serializer):
    messages = serializers.IntegerField(help_text="The message itself (1).")
    memories = serializers.IntegerField(help_text="Embeddings: the message's and its summaries'.")
    summaries = serializers.IntegerField(help_text="Summaries built from it (not rewritten: the Dreamer summarises the rest again).")
    embedding_cache_entries = serializers.IntegerField(help_text="Cached embeddings of its text and of those summaries.")
    turn_streams = serializers.IntegerField(help_text="Live event streams of its turn (they held the reply).")


class ForgottenRedactedSerializer(serializers.Serializer):
    turn_events = serializers.IntegerField(help_text="Recorded provider requests and responses with its text replaced.")
    turns = serializers.IntegerField(help_text="Turns those events belong to: its own and those whose context carried it.")


class ForgottenClearedSerializer(serializers.Serializer):
    turn_outputs = serializers.IntegerField(help_text="Turns whose reply it was (their `response` is null now).")


class ForgetReportSerializer(serializers.Serializer):
    """What forgetting a message did, counted per place the text was stored."""

    object = serializers.CharField(default="message.forgotten")
    id = serializers.UUIDField()
    conversation = serializers.UUIDField()
    deleted = ForgottenDeletedSerializer()
    redacted = ForgottenRedactedSerializer()
    cleared = ForgottenClearedSerializer()
    unmarked_messages = serializers.IntegerField(help_text="Other messages of the deleted summaries, unconsolidated again.")


def forget_message(request, conversation: Conversation, message_id) -> Response:
    """DELETE /v1/conversations/{id}/messages/{message_id}: the message's text, wherever it was stored."""
    done = forget.forget_message(conversation, message_id, actor=audit.actor_for_key(request.user.api_key))
    report = {
        "object": "message.forgotten",
        "id": str(message_id),
        "conversation": str(conversation.id),
        "deleted": {
            "messages": 1,
            "memories": done["memories"],
            "summaries": done["summaries"],
            "embedding_cache_entries": done["embedding_cache_entries"],
            "turn_streams": done["turn_streams"],
        },
        "redacted": {"turn_events": done["turn_events"], "turns": done["turns"]},
        "cleared": {"turn_outputs": done["turn_outputs"]},
        "unmarked_messages": done["unmarked_messages"],
    }
    return Response(report)


def list_summaries(conversation: Conversation) -> Response:
    summaries = Summary.objects.filter(conversation=conversation, tenant=conversation.tenant).order_by("first_seq")
    return Response({"object": "list", "data": SummarySerializer(summaries, many=True).data})


def consolidate_now(request, conversation: Conversation) -> Response:
    """POST /v1/conversations/{id}/consolidate (?dry_run=true: the plan only, nothing changes)."""
    dry_run = request.query_params.get("dry_run", "").lower() in ("1", "true", "yes")
    if dry_run:
        plan = dreamer.plan_span(conversation)
        return Response(
            {
                "object": "consolidation.plan",
                "dry_run": True,
                "unconsolidated_tokens": dreamer.unconsolidated_tokens(conversation),
                "threshold": conversation.agent.consolidation_threshold,
                "next_span": plan.as_dict() if plan else None,
            }
        )
    if conversation.consolidation_lease is not None and conversation.consolidation_lease > timezone.now():
        raise limits.SlotTaken  # the scheduled Dreamer holds it: a queued request would find nothing to do
    slot = limits.take(conversation.tenant_id, conversation.id)  # SlotTaken, TenantBusy: sentinel_site/errors.py
    try:
        consolidate_task.apply_async(
            args=[str(conversation.id)],
            kwargs={"trigger": "api", "tenant_id": str(conversation.tenant_id), "slot": slot},
            queue="memory",
        )
    except Exception:
        limits.release(conversation.tenant_id, conversation.id, slot)  # never queued: nothing holds it
        raise
    return Response(
        {
            "object": "consolidation",
            "status": "queued",
            "conversation": str(conversation.id),
            "progress": progress(conversation),
            "summaries_url": f"/v1/conversations/{conversation.id}/summaries",
            "runs_url": f"/v1/conversations/{conversation.id}/consolidations",
        },
        status=status.HTTP_202_ACCEPTED,
    )


class MessagePagination(CursorPagination):
    ordering = ("seq", "index")


class ConversationMemoryViewSet(ConversationScoped, viewsets.GenericViewSet):
    """Conversations; their messages, summaries and consolidation (memory logic in memory/api.py)."""

    # The docstring is API text (OpenAPI descriptions, OPTIONS), the same as agents' ConversationViewSet.
    # This one is what memory keeps of a conversation, at /v1/conversations/{id}/...: its messages
    # (listed and imported, or one forgotten), its summaries, a consolidation now.
    required_scopes = {"GET": roles.TURNS_READ, "POST": roles.MEMORY_WRITE, "DELETE": roles.MEMORY_WRITE}
    action_scopes = {"summaries": roles.MEMORY_READ, "consolidations": roles.MEMORY_READ}

    @extend_schema(
        methods=["GET"], summary="List a conversation's messages", responses=MessageSerializer(many=True), tags=["conversations"]
    )
    @extend_schema(
        methods=["POST"],
        summary="Import messages",
        description="Appends up to 1,000 messages without running a turn (history import). Each may carry a `client_id` "
        "(unique per conversation; a repeat is a 409 and nothing is written) and a `timestamp`. They reach long-term "
        "memory in the background.",
        request=ImportSerializer,
        responses={201: ImportResultSerializer, 409: OpenApiResponse(OpenApiTypes.OBJECT)},
        tags=["memory"],
    )
    @action(detail=True, methods=["get", "post"], pagination_class=MessagePagination)
    def messages(self, request, pk=None):
        conversation = self.get_object()
        if request.method == "POST":
            return import_messages(request, conversation)
        page = self.paginate_queryset(Message.objects.filter(conversation=conversation, tenant=request.user.tenant))
        return self.get_paginated_response(MessageSerializer(page, many=True).data)

    @extend_schema(
        summary="Forget a message",
        description="Removes the message's text everywhere it was stored: the message and its embedding, summaries built "
        "from it (their other messages are summarised again later), cached embeddings, and the recorded provider requests "
        "and responses of the turns that carried it (redacted in place). Answers what was done, counted per place. A "
        "message of a turn still running is a 409.",
        responses={200: ForgetReportSerializer, 409: OpenApiResponse(OpenApiTypes.OBJECT)},
        tags=["memory"],
    )
    @action(detail=True, methods=["delete"], url_path=r"messages/(?P<message_id>[0-9a-fA-F-]{32,36})")
    def forget_message(self, request, pk=None, message_id=None):
        return forget_message(request, self.get_object(), message_id)

    @extend_schema(
        summary="A history import's progress",
        description="An import's messages are in the history at once; `processed` counts those in long-term memory "
        "(embedded in the background), `state` is `indexing` until all of its `total` are, then `completed`.",
        responses={200: ImportProgressSerializer, 404: OpenApiResponse(OpenApiTypes.OBJECT)},
        tags=["memory"],
    )
    @action(detail=True, methods=["get"], url_path=r"imports/(?P<seq>[0-9]{1,9})", pagination_class=None)
    def import_progress(self, request, pk=None, seq=None):
        found = imports.progress(self.get_object().id, int(seq))
        if found is None:
            raise not_found("import")
        return Response(found.as_dict())

    @extend_schema(summary="A conversation's summaries", responses=SummarySerializer(many=True), tags=["memory"])
    @action(detail=True, methods=["get"], pagination_class=None)
    def summaries(self, request, pk=None):
        return list_summaries(self.get_object())

    @extend_schema(
        summary="A conversation's consolidation runs",
        description="The newest 50 consolidation steps, newest first: status, `stage` (planned, prompting, writing, done), "
        "the conversation's messages consolidated of its total as the step left them, facts kept, tokens and times; with "
        "the conversation's `progress` now.",
        responses={200: ConsolidationRunSerializer(many=True), 404: OpenApiResponse(OpenApiTypes.OBJECT)},
        tags=["memory"],
    )
    @action(detail=True, methods=["get"], pagination_class=None)
    def consolidations(self, request, pk=None):
        conversation = self.get_object()
        runs = ConsolidationRun.objects.filter(conversation=conversation, tenant=conversation.tenant).order_by("-created_at")[:50]
        data = ConsolidationRunSerializer(runs, many=True).data
        return Response({"object": "list", "progress": progress(conversation), "data": data})

    @extend_schema(
        summary="Consolidate a conversation now",
        description="Queues a consolidation of the oldest unconsolidated span(s) whatever the threshold (202). With "
        "`?dry_run=true` answers at once with the next span, changing nothing (200). One consolidation per conversation "
        "may be queued or running (another is a 409), and a few per tenant (`SENTINEL_CONSOLIDATIONS_PER_TENANT`; "
        "beyond, a 429 with Retry-After).",
        parameters=[OpenApiParameter("dry_run", bool, required=False)],
        request=None,
        responses={
            200: OpenApiResponse(OpenApiTypes.OBJECT),
            202: OpenApiResponse(OpenApiTypes.OBJECT),
            409: OpenApiResponse(OpenApiTypes.OBJECT, description="This conversation is being consolidated already."),
            429: OpenApiResponse(OpenApiTypes.OBJECT, description="The tenant has as many consolidations queued or running as it may."),
        },
        tags=["memory"],
    )
    @action(detail=True, methods=["post"])
    def consolidate(self, request, pk=None):
        return consolidate_now(request, self.get_object())


class MemoryDeleteView(APIView):
    """DELETE /v1/memory/{id}: forget a long-term memory (its embedding); the message stays in history."""

    required_scopes = {"DELETE": roles.MEMORY_WRITE}

    @extend_schema(summary="Forget a memory", responses={204: None, 404: OpenApiResponse(OpenApiTypes.OBJECT)}, tags=["memory"])
    def delete(self, request, memory_id):
        memory = Memory.objects.filter(id=memory_id, tenant=request.user.tenant).only("tenant_id", "agent_id").first()
        if memory is None:
            raise not_found("memory")
        with transaction.atomic():
            Memory.objects.filter(id=memory.id).delete()
            indexing.forget_memories_of(memory.tenant_id, memory.agent_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


def context_piece(piece) -> dict:
    """One piece of a context as the API and the admin show it: what it is, and why it was chosen."""
    return {
        "kind": piece.kind,
        "text": piece.text if piece.kind != "recent" else (piece.message or {}).get("content"),
        "tokens": piece.tokens,
        "date": piece.date,
        "source_message_ids": piece.source_message_ids,
        "client_ids": piece.client_ids,
        "score": piece.score,
        "why": piece.why,
        "memory_id": piece.memory_id,
        "summary_id": piece.summary_id,
    }


class ContextWhySerializer(serializers.Serializer):
    """Why a recalled piece was chosen (hybrid search, memory/search.py)."""

    via = serializers.ChoiceField(
        ["hit", "neighbour", "update"], help_text="A search hit; the message next to a hit; a later fact replacing a hit."
    )
    fused_rank = serializers.IntegerField(help_text="Rank after reciprocal-rank fusion (1 = best); a neighbour or update: its hit's.")
    fused_score = serializers.FloatField(help_text="Sum over retrievers of 1 / (60 + rank).")
    vector_rank = serializers.IntegerField(required=False, help_text="Rank by cosine similarity; absent when outside its top k.")
    similarity = serializers.FloatField(required=False)
    text_rank = serializers.IntegerField(required=False, help_text="Rank by PostgreSQL full text; absent when no word matched.")
    text_score = serializers.FloatField(required=False, help_text="Full text's score: ts_rank, or ts_rank_cd (SENTINEL_TEXT_RANK).")
    of = serializers.UUIDField(required=False, help_text="The hit a neighbour or update came with.")
    supersedes = serializers.UUIDField(required=False, help_text="A fact: the earlier fact it replaces (both kept).")


class ContextPieceSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(["system", "summary", "shared", "recalled", "recent"])
    text = serializers.CharField(allow_null=True)
    tokens = serializers.IntegerField()
    date = serializers.DateField(allow_null=True, help_text="When it was said (a summary: the last day of its span).")
    source_message_ids = serializers.ListField(child=serializers.UUIDField())
    client_ids = serializers.ListField(child=serializers.CharField())
    score = serializers.FloatField(allow_null=True, help_text="Cosine similarity to the query, when the vector retriever ranked it.")
    why = ContextWhySerializer(allow_null=True)
    memory_id = serializers.UUIDField(allow_null=True)
    summary_id = serializers.UUIDField(allow_null=True)


class ContextSerializer(serializers.Serializer):
    """The next turn's context, piece by piece, as GET /v1/conversations/{id}/context answers it."""

    object = serializers.CharField(default="context")
    conversation = serializers.UUIDField()
    query = serializers.CharField()
    pieces = ContextPieceSerializer(many=True)
    total_tokens = serializers.IntegerField()
    history_tokens = serializers.IntegerField()
    unconsolidated_tokens = serializers.IntegerField()
    budget = serializers.IntegerField()


class ContextView(AsyncAPIView):
    """GET /v1/conversations/{id}/context: what the next turn would send to the model, piece by piece."""

    required_scopes = {"GET": roles.MEMORY_READ}
    query = TextParam("query", min_length=1, max_length=2000)

    @extend_schema(
        summary="Explain the next turn's context",
        description="The pieces of context the next turn would receive: kind (system, summary, recalled, recent), text, "
        "date, source message ids and client ids, tokens, and for recalled pieces why they were chosen: the rank in "
        "each retriever (vector, full text), the fused rank, and whether it came as a hit, as the neighbour of one or "
        "as the later fact replacing one. With the total and, for comparison, the tokens of the whole history and of "
        "its unconsolidated part. `query` overrides what recall searches for. Another tenant's conversation is a 404.",
        parameters=[query.openapi()],
        responses={200: ContextSerializer, 400: OpenApiResponse(OpenApiTypes.OBJECT), 404: OpenApiResponse(OpenApiTypes.OBJECT)},
        tags=["memory"],
    )
    async def get(self, request, conversation_id):
        conversation = await sync_to_async(tenant_conversation)(request, conversation_id)
        query = self.query.read(request)
        # Embedded by a worker (memory/remote.py), from the assembly's thread: recall may ask for
        # more than the query (a vector per clause of a two-part question).
        embed = partial(remote.embed_texts_sync, tenant=conversation.tenant_id)
        context = await sync_to_async(assemble)(conversation, query=query, embed=embed)
        pieces = [context_piece(p) for p in context.pieces]
        return Response(
            {
                "object": "context",
                "conversation": str(conversation.id),
                "query": context.query,
                "pieces": pieces,
                "total_tokens": context.total_tokens,
                "history_tokens": context.history_tokens,
                "unconsolidated_tokens": context.unconsolidated_tokens,
                "budget": conversation.agent.context_budget,
            }
        )


class MemorySearchView(AsyncAPIView):
    """GET /v1/memory/search: memories ranked by similarity to `q`."""

    required_scopes = {"GET": roles.MEMORY_READ}
    q = TextParam("q", required=True, min_length=1, max_length=2000)
    k = IntegerParam("k", 1, 50, default=10)
    agent = TextParam("agent")

    @extend_schema(
        summary="Search long-term memory",
        parameters=[
            q.openapi("What to search for."),
            k.openapi("How many memories."),
            OpenApiParameter("conversation", str, required=False),
            agent.openapi("An agent's name."),
        ],
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT), 400: OpenApiResponse(OpenApiTypes.OBJECT)},
        tags=["memory"],
    )
    async def get(self, request):
        params = request.query_params
        q, k, agent_name = self.q.read(request), self.k.read(request), self.agent.read(request)
        tenant = request.user.tenant
        scope: dict = {}
        if agent_name:
            agent = await Agent.objects.live().filter(tenant=tenant, name=agent_name).afirst()
            if agent is None:
                raise ApiError(404, "No such agent.", param="agent", code="agent_not_found")
            scope["agent_id"] = agent.id
        if params.get("conversation"):
            conversation = await sync_to_async(_conversation_or_404)(tenant, params["conversation"])
            scope["conversation_id"] = conversation.id
        vector = (await remote.embed_texts([q], tenant.id))[0]
        hits = await sync_to_async(search.search)(tenant.id, vector, k=k, **scope)
        return Response(
            {
                "object": "list",
                "query": q,
                "data": [
                    {
                        "id": str(h.memory.id),
                        "score": round(h.score, 4),
                        "kind": h.memory.kind,
                        "role": h.memory.role,
                        "text": h.memory.text,
                        "conversation": str(h.memory.conversation_id),
                        "agent": str(h.memory.agent_id),
                        "occurred_at": h.memory.occurred_at,
                        "source_message_ids": [str(i) for i in h.memory.source_message_ids],
                    }
                    for h in hits
                ],
            }
        )


def _conversation_or_404(tenant, conversation_id) -> Conversation:
    try:
        uuid.UUID(str(conversation_id))
    except ValueError:
        raise ApiError(404, "No such conversation.", param="conversation", code="conversation_not_found") from None
    conversation = Conversation.objects.filter(tenant=tenant, id=conversation_id).first()
    if conversation is None:
        raise ApiError(404, "No such conversation.", param="conversation", code="conversation_not_found")
    return conversation
