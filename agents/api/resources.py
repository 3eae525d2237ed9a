"""Tenant-scoped resources: models, agents, conversations (list, read, create, update, delete), turns,
dead letters. Another tenant's id is a 404."""

from __future__ import annotations

import psycopg
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import OperationalError, transaction
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from agents import deadletters
from agents.api.serializers import (
    AgentSerializer,
    ConversationCreateSerializer,
    ConversationDeletedSerializer,
    ConversationSerializer,
    ConversationUpdateSerializer,
    TurnSerializer,
)
from agents.models import UNFINISHED, Agent, Conversation, DeadLetter, Message, Turn
from agents.tasks import enqueue_turn
from budgets import audit, roles
from memory.indexing import forget_memories_of
from memory.tasks import schedule_indexing
from sentinel_site import config_cache
from sentinel_site.errors import ApiError


class TenantScoped:
    """Every queryset filtered on the caller's tenant; nothing else is ever visible."""

    model: type
    lookup_value_regex = r"[0-9a-fA-F-]{32,36}"

    def get_queryset(self):
        return self.model.objects.filter(tenant=self.request.user.tenant)

    def get_object(self):
        try:
            return super().get_object()
        except DjangoValidationError:  # a malformed UUID names nothing
            raise NotFound() from None


class ModelsView(APIView):
    """OpenAI's model list: the caller's agents, each usable as `model`."""

    required_scopes = {"GET": roles.AGENTS_READ}

    @extend_schema(
        summary="List models",
        description="Your agents, in OpenAI's model list shape.",
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT)},
        tags=["models"],
    )
    def get(self, request):
        agents = Agent.objects.live().filter(tenant=request.user.tenant).order_by("name")
        data = [
            {"id": agent.name, "object": "model", "created": int(agent.created_at.timestamp()), "owned_by": request.user.tenant.name}
            for agent in agents
        ]
        return Response({"object": "list", "data": data})


NAME_TAKEN = OpenApiResponse(description="Another agent of yours has this name.")


@extend_schema_view(
    list=extend_schema(summary="List agents", tags=["agents"]),
    create=extend_schema(summary="Create an agent", responses={201: AgentSerializer, 409: NAME_TAKEN}, tags=["agents"]),
    retrieve=extend_schema(summary="Read an agent", tags=["agents"]),
    update=extend_schema(summary="Replace an agent", responses={200: AgentSerializer, 409: NAME_TAKEN}, tags=["agents"]),
    partial_update=extend_schema(summary="Update an agent", responses={200: AgentSerializer, 409: NAME_TAKEN}, tags=["agents"]),
    destroy=extend_schema(
        summary="Delete an agent",
        description="The agent stops answering and its name is free again. Its conversations, turns, their event logs and "
        "the spend ledger are kept (an audit record is never cascaded away). An agent with a queued or running turn "
        "cannot be deleted (409): wait for it, or cancel it.",
        responses={204: None, 409: OpenApiResponse(OpenApiTypes.OBJECT, description="The agent has unfinished turns.")},
        tags=["agents"],
    ),
)
class AgentViewSet(TenantScoped, viewsets.ModelViewSet):
    model = Agent
    serializer_class = AgentSerializer
    pagination_class = None
    required_scopes = {
        "GET": roles.AGENTS_READ,
        "POST": roles.AGENTS_WRITE,
        "PUT": roles.AGENTS_WRITE,
        "PATCH": roles.AGENTS_WRITE,
        "DELETE": roles.AGENTS_WRITE,
    }

    def get_queryset(self):
        return super().get_queryset().live()

    def get_serializer_context(self):
        return {**super().get_serializer_context(), "tenant": self.request.user.tenant}

    def perform_create(self, serializer):
        with transaction.atomic():
            agent = serializer.save(tenant=self.request.user.tenant)
            self._audit("agent.created", agent, sorted(serializer.validated_data))

    def perform_update(self, serializer):
        with transaction.atomic():
            had_key = bool(serializer.instance.provider_api_key)
            agent = serializer.save()
            changed = sorted(serializer.validated_data)
            if had_key and not agent.provider_api_key and "provider_api_key" not in changed:
                changed.append("provider_api_key (cleared: the base URL changed)")
            self._audit("agent.updated", agent, changed)

    def perform_destroy(self, agent):
        with transaction.atomic():
            # Nothing is removed, so a turn admitted while this runs is still run and recorded in full.
            if Turn.objects.filter(agent=agent, status__in=UNFINISHED).exists():
                raise ApiError(409, "This agent has queued or running turns; it can be deleted once they finish.", code="agent_busy")
            Agent.objects.filter(id=agent.id).update(deleted_at=timezone.now())
            config_cache.changed()  # an update sends no signal
            self._audit("agent.deleted", agent, [])

    def _audit(self, action: str, agent: Agent, fields: list[str]) -> None:
        """Field names only: never a value, so a provider key cannot reach the audit log."""
        audit.record(
            action,
            actor=audit.actor_for_key(self.request.user.api_key),
            tenant_id=agent.tenant_id,
            target=str(agent.id),
            data={"name": agent.name, "fields": fields},
        )


class ConversationScoped(TenantScoped):
    """A conversation of the caller's tenant, by id: what both conversation viewsets look up (this one
    and memory/api.py's)."""

    model = Conversation
    serializer_class = ConversationSerializer  # also what OPTIONS describes, on every conversation route

    def get_queryset(self):
        return super().get_queryset().select_related("agent")


@extend_schema_view(
    list=extend_schema(summary="List conversations", tags=["conversations"]),
    retrieve=extend_schema(summary="Read a conversation", tags=["conversations"]),
    create=extend_schema(
        summary="Create a conversation (to import history before any turn)",
        request=ConversationCreateSerializer,
        responses={201: ConversationSerializer},
        tags=["conversations"],
    ),
)
class ConversationViewSet(ConversationScoped, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Conversations; their messages, summaries and consolidation (memory logic in memory/api.py)."""

    # The docstring is API text (OpenAPI descriptions, OPTIONS), the same on memory/api.py's viewset.
    # This one is the conversation resource: list, read, create, update, delete; what memory keeps of a
    # conversation is memory/api.py's, on the same URLs (memory/urls.py).
    required_scopes = {"GET": roles.TURNS_READ, "POST": roles.MEMORY_WRITE, "DELETE": roles.MEMORY_WRITE}

    def create(self, request):
        # POST /v1/conversations: a conversation for an agent, so history can be imported first.
        data = ConversationCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        tenant = request.user.tenant
        agent = _conversation_agent(tenant, data.validated_data.get("agent"))
        items = data.validated_data.get("items") or []
        with transaction.atomic():
            conversation = Conversation.objects.create(
                tenant=tenant, agent=agent, title=data.validated_data["title"], metadata=data.validated_data["metadata"] or {},
                last_seq=1 if items else 0,
            )  # fmt: skip
            # OpenAI's `items`: the conversation's first messages, stored as an import would store them.
            Message.objects.bulk_create(
                Message.from_openai(item, tenant=tenant, conversation=conversation, seq=1, index=index) for index, item in enumerate(items)
            )
            if items:
                transaction.on_commit(schedule_indexing)
        return Response(ConversationSerializer(conversation).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        operation_id="conversations_update",
        summary="Update a conversation",
        description="OpenAI's update (`client.conversations.update(id, metadata=...)`): `metadata` replaces the "
        "conversation's (null clears it); Sentinel's `title` may be set too. A field left out is left as it is.",
        request=ConversationUpdateSerializer,
        responses={200: ConversationSerializer, 400: OpenApiResponse(OpenApiTypes.OBJECT), 404: OpenApiResponse(OpenApiTypes.OBJECT)},
        tags=["conversations"],
    )
    def modify(self, request, pk=None):
        # POST /v1/conversations/{id} (agents/api/urls.py routes a detail POST here): OpenAI updates by POST.
        conversation = self.get_object()
        data = ConversationUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = {name: value or {} if name == "metadata" else value for name, value in data.validated_data.items()}
        if not fields:  # nothing to change: the conversation as it is
            return Response(ConversationSerializer(conversation).data)
        with transaction.atomic():
            Conversation.objects.filter(id=conversation.id).update(**fields, updated_at=timezone.now())
            audit.record("conversation.updated", actor=audit.actor_for_key(request.user.api_key), tenant_id=conversation.tenant_id,
                         target=str(conversation.id), data={"fields": sorted(fields)})  # fmt: skip
        conversation.refresh_from_db()
        return Response(ConversationSerializer(conversation).data)

    @extend_schema(
        operation_id="conversations_delete",
        summary="Delete a conversation",
        description="Deletes the conversation and everything kept of it: its messages and their memories, summaries, its "
        "turns with their events, and the stored responses of those turns. The spend ledger and the audit log keep their "
        "entries. A conversation with a turn queued, running or awaiting approval, or being consolidated, is a 409.",
        responses={
            200: ConversationDeletedSerializer,
            404: OpenApiResponse(OpenApiTypes.OBJECT),
            409: OpenApiResponse(OpenApiTypes.OBJECT),
        },
        tags=["conversations"],
    )
    def destroy(self, request, pk=None):
        conversation = self.get_object()
        _delete_conversation(conversation, actor=audit.actor_for_key(request.user.api_key))
        return Response({"id": str(conversation.id), "object": "conversation.deleted", "deleted": True})


def _delete_conversation(conversation: Conversation, *, actor: str) -> None:
    """Under the conversation's row lock, so no turn is admitted into it meanwhile (admission's update
    that numbers the turn waits for the lock, then finds no conversation). Its messages are deleted
    locked, as the indexer embeds under that lock.

    The messages are locked before the conversation: the indexer holds a message's lock and, at its
    commit, a key-share lock on the message's conversation (the memory's foreign key), so taking the
    conversation first deadlocked against an indexer embedding the conversation's last messages. Locked
    first, they are skipped by any indexer that comes after (SKIP LOCKED), and one already at work is
    waited for. A deadlock that still happens (messages admitted between the two locks and embedded at
    once) is retried."""
    for attempt in range(3):
        try:
            return _delete_conversation_once(conversation, actor=actor)
        except OperationalError as error:
            if attempt == 2 or not isinstance(error.__cause__, psycopg.errors.DeadlockDetected):
                raise


def _delete_conversation_once(conversation: Conversation, *, actor: str) -> None:
    with transaction.atomic():
        list(Message.objects.filter(conversation_id=conversation.id).select_for_update(of=("self",)).values_list("id", flat=True))
        locked = Conversation.objects.select_for_update().get(id=conversation.id)
        if Turn.objects.filter(conversation=locked, status__in=UNFINISHED).exists():
            raise ApiError(409, "This conversation has a turn queued, running or awaiting approval; delete it once that has ended.",
                           code="conversation_busy")  # fmt: skip
        if locked.consolidation_lease and locked.consolidation_lease > timezone.now():
            raise ApiError(409, "This conversation is being consolidated; delete it once that has ended.", code="conversation_busy")
        messages = Message.objects.filter(conversation=locked)
        counts = {"messages": messages.count(), "turns": Turn.objects.filter(conversation=locked).count()}
        Message.delete_locked(messages)
        Conversation.objects.filter(id=conversation.id).delete()
        forget_memories_of(locked.tenant_id, locked.agent_id)
        audit.record("conversation.deleted", actor=actor, tenant_id=locked.tenant_id, target=str(conversation.id), data=counts)


def _conversation_agent(tenant, name: str | None) -> Agent:
    """The agent named, or (OpenAI's clients name none) the tenant's only agent."""
    agents = Agent.objects.live().filter(tenant=tenant)
    if name is not None:
        agent = agents.filter(name=name).first()
        if agent is None:
            raise ApiError(404, "No such agent.", param="agent", code="agent_not_found")
        return agent
    only = list(agents[:2])
    if len(only) != 1:
        raise ApiError(400, "Name the conversation's agent: `agent` (with the openai client, extra_body={'agent': name}).",
                       param="agent", code="agent_required")  # fmt: skip
    return only[0]


@extend_schema_view(
    list=extend_schema(summary="List turns", tags=["turns"]),
    retrieve=extend_schema(summary="Read a turn", tags=["turns"]),
)
class TurnViewSet(TenantScoped, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    model = Turn
    serializer_class = TurnSerializer
    required_scopes = {"GET": roles.TURNS_READ}

    def get_queryset(self):
        return super().get_queryset().select_related("agent", "output")


class DeadLetterView(APIView):
    """GET /v1/dead-letters: this tenant's dead-lettered turns; POST /v1/dead-letters/{id}/redrive."""

    required_scopes = {"GET": roles.TURNS_READ, "POST": roles.TURNS_EXECUTE}

    @extend_schema(summary="List dead letters", responses=OpenApiResponse(OpenApiTypes.OBJECT), tags=["turns"])
    def get(self, request, letter_id=None):
        letters = DeadLetter.objects.filter(tenant=request.user.tenant).order_by("-created_at")[:200]
        data = [
            {
                "id": str(d.id),
                "turn": str(d.turn_id),
                "reason": d.reason,
                "attempts": d.attempts,
                "last_error": d.last_error,
                "created_at": d.created_at,
                "redriven_at": d.redriven_at,
            }
            for d in letters
        ]
        return Response({"object": "list", "data": data})

    @extend_schema(summary="Re-drive a dead letter", request=None, responses={202: OpenApiResponse(OpenApiTypes.OBJECT)}, tags=["turns"])
    def post(self, request, letter_id=None):
        letter = DeadLetter.objects.filter(tenant=request.user.tenant, id=letter_id).first() if letter_id else None
        if letter is None:
            raise NotFound()
        if not deadletters.redrive(letter, actor=audit.actor_for_key(request.user.api_key)):
            raise ApiError(409, "This dead letter was already re-driven.", code="already_redriven")
        enqueue_turn(letter.turn_id)
        return Response({"object": "turn", "id": str(letter.turn_id), "status": "queued"}, status=202)
