"""The history API: an agent's state transitions over time, a turn replayed (or rerun) from its log,
a conversation forked at a turn. Domain logic in agents/replay.py and agents/forking.py.

Everything is scoped to the caller's tenant: another tenant's agent, turn or conversation is a 404.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial

from django.utils import timezone
from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, PolymorphicProxySerializer, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from agents import forking, providers, replay, rerun
from agents.api.serializers import ConversationSerializer
from agents.models import Agent, Conversation, Turn
from budgets import audit, roles
from memory import remote
from sentinel_site.errors import ApiError, not_found
from sentinel_site.pagination import CursorPagination

ERROR = OpenApiResponse(OpenApiTypes.OBJECT, description="OpenAI's error shape.")


# --- GET /v1/agents/{id}/transitions -------------------------------------------------------------
class TransitionSerializer(serializers.Serializer):
    """One state transition of one of the agent's turns."""

    object = serializers.SerializerMethodField()
    turn = serializers.UUIDField(source="turn_id")
    conversation = serializers.UUIDField(source="conversation_id")
    attempt = serializers.IntegerField()
    seq = serializers.IntegerField(help_text="The event's position in its attempt's log.")
    from_state = serializers.CharField(help_text="idle, thinking, tool_call or reflecting.")
    to_state = serializers.CharField()
    event = serializers.SerializerMethodField(help_text="The trigger: message_received, llm_response, tool_result, complete.")
    created_at = serializers.DateTimeField()

    def get_object(self, row) -> str:
        return "agent.transition"

    def get_event(self, row) -> str | None:
        return (row.get("payload") or {}).get("event")


class TransitionPagination(CursorPagination):
    """Oldest first: a replay of the agent's states reads in the order they happened."""

    ordering = ("created_at", "id")
    page_size = 100


def _instant(request, name: str) -> datetime | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    parsed = None
    # A "+" of an offset left unencoded in a query string arrives as a space.
    for candidate in dict.fromkeys([raw, raw.replace(" ", "+")]):
        try:
            parsed = parsed or parse_datetime(candidate)
        except ValueError:
            continue
    if parsed is None:
        raise ApiError(400, f"{name} must be an ISO 8601 timestamp, like 2026-12-01T21:00:00Z.", param=name, code="invalid_value")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


RANGE = [
    OpenApiParameter("from", OpenApiTypes.DATETIME, required=False, description="From this instant (inclusive; UTC if no offset)."),
    OpenApiParameter("to", OpenApiTypes.DATETIME, required=False, description="Until this instant (exclusive); default: now."),
]


@extend_schema(
    summary="An agent's state transitions",
    description="Every state transition of the agent's turns in the range, oldest first, with the turn, its conversation, "
    "the attempt and the instant (seed 000's `replay(agent, from, to)`). A deleted agent's transitions stay readable. "
    "Cursor-paginated (`limit` up to 200).",
    parameters=RANGE,
    responses={200: TransitionSerializer(many=True), 400: ERROR, 404: ERROR},
    tags=["replay"],
)
class AgentTransitionsView(generics.ListAPIView):
    serializer_class = TransitionSerializer
    pagination_class = TransitionPagination
    required_scopes = {"GET": roles.TURNS_READ}

    def get_queryset(self):
        tenant = self.request.user.tenant
        agent = Agent.objects.filter(tenant=tenant, id=self.kwargs["agent_id"]).only("id").first()
        if agent is None:
            raise not_found("agent")
        start, end = _instant(self.request, "from"), _instant(self.request, "to") or timezone.now()
        if start is not None and start > end:
            raise ApiError(400, "from must not be later than to.", param="from", code="invalid_value")
        return replay.transitions(tenant.id, agent.id, start, end)


# --- POST /v1/turns/{id}/replay ------------------------------------------------------------------
class DivergenceSerializer(serializers.Serializer):
    field = serializers.CharField(help_text="JSON path of the field: body.messages[1].content, outcome.cost, context.pieces[0].memory_id.")
    recorded = serializers.JSONField(required=False, help_text="Absent: the field was not in the recording.")
    replayed = serializers.JSONField(required=False, help_text="Absent: the replay did not produce the field.")


class ReplayReportSerializer(serializers.Serializer):
    object = serializers.CharField(default="turn.replay")
    turn = serializers.UUIDField()
    attempt = serializers.IntegerField(help_text="The attempt whose recorded exchange was replayed (the last that called the model).")
    identical = serializers.BooleanField(help_text="No divergence and nothing unreproducible.")
    outcome_checked = serializers.BooleanField(help_text="False when the recorded call failed: only the request was compared.")
    divergences = DivergenceSerializer(many=True)
    unreproducible = serializers.ListField(child=serializers.DictField(), help_text="What the store no longer holds, and why.")
    notes = serializers.ListField(child=serializers.CharField())


class RerunSerializer(serializers.Serializer):
    object = serializers.CharField(default="turn.rerun")
    turn = serializers.UUIDField()
    identical = serializers.BooleanField()
    recorded = serializers.DictField(help_text="The recorded answer: content, tool_calls, finish_reason, model, usage, cost.")
    answer = serializers.DictField(help_text="The new answer, in the same shape; cost is what this call was charged.")
    diff = DivergenceSerializer(many=True)


def provider_error(error: providers.ProviderError) -> ApiError:
    return ApiError(error.status, error.message, type=error.type, code=error.code)


@extend_schema(
    summary="Replay a turn",
    description="Re-executes a finished turn against its recorded provider request and response, without calling the "
    "model or spending anything: the context is assembled again from the stored state as it was then, the request body "
    "built from it is compared with the recorded one field by field, and the recorded response is put through the outcome "
    "computation and compared with the turn's outcome (reply, finish_reason, tokens, cost, final state, transitions). "
    "With `?mode=rerun` (scope `turns:execute`) the recorded request is sent to the model again as a new call, budgeted "
    "and audited, and the new answer comes back with a diff against the recorded one.",
    parameters=[OpenApiParameter("mode", str, enum=["replay", "rerun"], required=False, description="Default: replay.")],
    request=None,
    responses={
        200: OpenApiResponse(
            PolymorphicProxySerializer(
                component_name="ReplayOrRerun",
                serializers=[ReplayReportSerializer, RerunSerializer],
                resource_type_field_name=None,
            ),
            description="The replay report (`object: turn.replay`), or with mode=rerun the rerun (`object: turn.rerun`).",
        ),
        400: ERROR,
        404: ERROR,
        409: OpenApiResponse(OpenApiTypes.OBJECT, description="The turn has not finished, or has no recorded call."),
        503: OpenApiResponse(OpenApiTypes.OBJECT, description="Budget exceeded (rerun), or the embedding service is down."),
    },
    tags=["replay"],
)
class TurnReplayView(APIView):
    required_scopes = {"POST": roles.TURNS_READ, "OPTIONS": roles.TURNS_READ}
    action_scopes = {"replay": roles.TURNS_READ, "rerun": roles.TURNS_EXECUTE}

    def initial(self, request, *args, **kwargs):
        # The scope depends on the mode: a replay reads, a rerun spends (budgets.auth.required_scope).
        self.action = "rerun" if request.query_params.get("mode") == "rerun" else "replay"
        super().initial(request, *args, **kwargs)

    def post(self, request, turn_id):
        mode = request.query_params.get("mode", "replay")
        if mode not in ("replay", "rerun"):
            raise ApiError(400, "mode must be replay or rerun.", param="mode", code="invalid_value")
        turn = Turn.objects.select_related("agent", "conversation").filter(id=turn_id, tenant=request.user.tenant).first()
        if turn is None:
            raise not_found("turn")
        turn.conversation.agent = turn.agent
        try:
            if mode == "rerun":
                actor = audit.actor_for_key(request.user.api_key)
                result = rerun.rerun(turn, api_key_id=request.user.api_key.id, actor=actor)
                return Response(result.as_dict())
            return Response(replay.replay(turn, embed=partial(remote.embed_texts_sync, tenant=turn.tenant_id)).as_dict())
        except replay.NotReplayable as refused:
            raise ApiError(409, refused.message, code=refused.code) from None
        except providers.ProviderError as error:
            raise provider_error(error) from None


# --- POST /v1/conversations/{id}/fork ------------------------------------------------------------
class ForkRequestSerializer(serializers.Serializer):
    at_turn = serializers.UUIDField(help_text="A finished turn of this conversation: the fork holds the history up to and including it.")


class ForkedSerializer(ConversationSerializer):
    last_seq = serializers.IntegerField(read_only=True)
    copied = serializers.SerializerMethodField()

    class Meta(ConversationSerializer.Meta):
        fields = [*ConversationSerializer.Meta.fields, "last_seq", "copied"]

    def get_copied(self, conversation) -> dict:
        return self.context.get("copied", {})


@extend_schema(
    summary="Fork a conversation at a turn",
    description="A new conversation of the same agent holding this conversation's history up to and including `at_turn` "
    "(messages in their order; the summaries that cover only those messages; their long-term memories, scoped to the new "
    "conversation). Nothing of the original changes. The fork recalls nothing of the conversations it was forked from "
    "beyond its own copies, so it answers from the forked history only. `metadata.forked_from` names where it came from.",
    request=ForkRequestSerializer,
    responses={201: ForkedSerializer, 400: ERROR, 404: ERROR, 409: OpenApiResponse(OpenApiTypes.OBJECT, description="Not finished.")},
    tags=["replay"],
)
class ConversationForkView(APIView):
    required_scopes = {"POST": roles.TURNS_EXECUTE, "OPTIONS": roles.TURNS_READ}

    def post(self, request, conversation_id):
        tenant = request.user.tenant
        conversation = Conversation.objects.select_related("agent").filter(id=conversation_id, tenant=tenant).first()
        if conversation is None:
            raise not_found("conversation")
        data = ForkRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        turn = Turn.objects.filter(id=data.validated_data["at_turn"], tenant=tenant, conversation=conversation).first()
        if turn is None:
            raise ApiError(404, "No such turn in this conversation.", param="at_turn", code="turn_not_found")
        if conversation.agent.deleted_at is not None:
            raise ApiError(409, "This conversation's agent was deleted; its conversations cannot be forked.", code="agent_deleted")
        try:
            forked = forking.fork(conversation, turn, actor=audit.actor_for_key(request.user.api_key))
        except forking.TurnNotFinished as refused:
            raise ApiError(409, str(refused), param="at_turn", code="turn_in_progress") from None
        copied = {"messages": forked.messages, "summaries": forked.summaries, "memories": forked.memories}
        forked.conversation.agent = conversation.agent
        return Response(ForkedSerializer(forked.conversation, context={"copied": copied}).data, status=status.HTTP_201_CREATED)
