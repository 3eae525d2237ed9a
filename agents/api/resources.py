"""Tenant-scoped resources: models, agents, conversations, turns. Another tenant's id is a 404."""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from agents.admission import principal_name
from agents.api.serializers import AgentSerializer, ConversationSerializer, MessageSerializer, TurnSerializer
from agents.models import UNFINISHED, Agent, Conversation, DeadLetter, Message, Turn
from budgets import audit, roles
from memory import api as memory_api
from sentinel_site.errors import ApiError
from sentinel_site.pagination import CursorPagination


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
            self._audit("agent.deleted", agent, [])

    def _audit(self, action: str, agent: Agent, fields: list[str]) -> None:
        """Field names only: never a value, so a provider key cannot reach the audit log."""
        audit.record(
            action,
            actor=principal_name(self.request.user.api_key),
            tenant_id=agent.tenant_id,
            target=str(agent.id),
            data={"name": agent.name, "fields": fields},
        )


class MessagePagination(CursorPagination):
    ordering = ("seq", "index")


@extend_schema_view(
    list=extend_schema(summary="List conversations", tags=["conversations"]),
    retrieve=extend_schema(summary="Read a conversation", tags=["conversations"]),
    create=extend_schema(
        summary="Create a conversation (to import history before any turn)",
        request=memory_api.ConversationCreateSerializer,
        responses={201: ConversationSerializer},
        tags=["conversations"],
    ),
)
class ConversationViewSet(TenantScoped, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Conversations; their messages, summaries and consolidation (memory logic in memory/api.py)."""

    model = Conversation
    serializer_class = ConversationSerializer
    required_scopes = {"GET": roles.TURNS_READ, "POST": roles.MEMORY_WRITE, "DELETE": roles.MEMORY_WRITE}
    action_scopes = {"summaries": roles.MEMORY_READ}

    def get_queryset(self):
        return super().get_queryset().select_related("agent")

    def create(self, request):
        return memory_api.create_conversation(request)

    @extend_schema(
        methods=["GET"], summary="List a conversation's messages", responses=MessageSerializer(many=True), tags=["conversations"]
    )
    @extend_schema(
        methods=["POST"],
        summary="Import messages",
        description="Appends up to 1,000 messages without running a turn (history import). Each may carry a `client_id` "
        "(unique per conversation; a repeat is a 409 and nothing is written) and a `timestamp`. They reach long-term "
        "memory in the background.",
        request=memory_api.ImportSerializer,
        responses={201: OpenApiResponse(OpenApiTypes.OBJECT), 409: OpenApiResponse(OpenApiTypes.OBJECT)},
        tags=["memory"],
    )
    @action(detail=True, methods=["get", "post"], pagination_class=MessagePagination)
    def messages(self, request, pk=None):
        conversation = self.get_object()
        if request.method == "POST":
            return memory_api.import_messages(request, conversation)
        page = self.paginate_queryset(Message.objects.filter(conversation=conversation, tenant=request.user.tenant))
        return self.get_paginated_response(MessageSerializer(page, many=True).data)

    @extend_schema(summary="Forget a message and its embedding", responses={204: None}, tags=["memory"])
    @action(detail=True, methods=["delete"], url_path=r"messages/(?P<message_id>[0-9a-fA-F-]{32,36})")
    def forget_message(self, request, pk=None, message_id=None):
        return memory_api.forget_message(self.get_object(), message_id)

    @extend_schema(summary="A conversation's summaries", responses=memory_api.SummarySerializer(many=True), tags=["memory"])
    @action(detail=True, methods=["get"], pagination_class=None)
    def summaries(self, request, pk=None):
        return memory_api.list_summaries(self.get_object())

    @extend_schema(
        summary="Consolidate a conversation now",
        description="Queues a consolidation of the oldest unconsolidated span(s) whatever the threshold (202). With "
        "`?dry_run=true` answers at once with the next span, changing nothing (200).",
        parameters=[OpenApiParameter("dry_run", bool, required=False)],
        request=None,
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT), 202: OpenApiResponse(OpenApiTypes.OBJECT)},
        tags=["memory"],
    )
    @action(detail=True, methods=["post"])
    def consolidate(self, request, pk=None):
        return memory_api.consolidate_now(request, self.get_object())


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
        from agents import deadletters
        from agents.tasks import enqueue_turn

        letter = DeadLetter.objects.filter(tenant=request.user.tenant, id=letter_id).first() if letter_id else None
        if letter is None:
            raise NotFound()
        if not deadletters.redrive(letter, actor=f"key:{request.user.api_key.key_id}"):
            raise ApiError(409, "This dead letter was already re-driven.", code="already_redriven")
        enqueue_turn(letter.turn_id)
        return Response({"object": "turn", "id": str(letter.turn_id), "status": "queued"}, status=202)
