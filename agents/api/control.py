"""Control of running work over HTTP: cancel, interrupt and resume a turn (or a conversation's), and
decide human approvals. The rules are agents/control.py's and agents/approvals.py's; here they meet
the caller's tenant, scopes and OpenAI-shaped errors."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from agents import approvals, control
from agents.api.serializers import TurnSerializer
from agents.models import UNFINISHED, Approval, ApprovalStatus, Conversation, Stop, Turn, TurnStatus
from agents.tasks import enqueue_turn
from budgets import audit, roles
from sentinel_site.errors import ApiError


def _turn_or_404(request, turn_id) -> Turn:
    turn = Turn.objects.filter(id=turn_id, tenant=request.user.tenant).select_related("agent", "output").first()
    if turn is None:
        raise NotFound()
    return turn


def _actor(request) -> str:
    return audit.actor_for_key(request.user.api_key)


def _stop(request, turn_id, kind: Stop) -> Response:
    try:
        done = control.request_stop(turn_id, tenant_id=request.user.tenant.id, kind=kind, actor=_actor(request))
    except Turn.DoesNotExist:
        raise NotFound() from None
    except control.TurnAlreadyFinished as finished:
        raise ApiError(409, str(finished), code="turn_already_finished") from None
    if done.following is not None:
        enqueue_turn(done.following)
    turn = _turn_or_404(request, turn_id)
    # Still running: the stop is on its way to the worker (within a second); the turn's events and
    # GET /v1/turns/{id} show when it has stopped.
    return Response(TurnSerializer(turn).data, status=202 if turn.status == TurnStatus.RUNNING else 200)


STOP_RESPONSES = {
    200: OpenApiResponse(TurnSerializer, description="Stopped (or it had been already)."),
    202: OpenApiResponse(TurnSerializer, description="Running: its worker stops it within a second."),
    404: OpenApiResponse(OpenApiTypes.OBJECT),
    409: OpenApiResponse(OpenApiTypes.OBJECT, description="The turn already ended otherwise (`turn_already_finished`)."),
}


class TurnCancelView(APIView):
    """POST /v1/turns/{id}/cancel."""

    required_scopes = {"POST": roles.TURNS_EXECUTE}

    @extend_schema(
        operation_id="turns_cancel",
        summary="Cancel a turn",
        description=(
            "A queued turn never starts. A running one stops its provider stream within a second and ends `cancelled`, "
            "what was streamed kept as its partial answer; its reservation is settled for the tokens used. A waiting "
            'client gets the partial answer with `finish_reason: "cancelled"`. Idempotent.'
        ),
        request=None,
        responses=STOP_RESPONSES,
        tags=["turns"],
    )
    def post(self, request, turn_id):
        return _stop(request, turn_id, Stop.CANCEL)


class TurnInterruptView(APIView):
    """POST /v1/turns/{id}/interrupt."""

    required_scopes = {"POST": roles.TURNS_EXECUTE}

    @extend_schema(
        operation_id="turns_interrupt",
        summary="Interrupt a turn",
        description=(
            "Stops the turn with its state persisted (the request it was making, what was streamed) and sets it "
            "`interrupted`; POST /v1/turns/{id}/resume continues it on any worker. The conversation goes on meanwhile."
        ),
        request=None,
        responses=STOP_RESPONSES,
        tags=["turns"],
    )
    def post(self, request, turn_id):
        return _stop(request, turn_id, Stop.INTERRUPT)


class ResumeSerializer(serializers.Serializer):
    input = serializers.CharField(required=False, allow_blank=False, max_length=1_000_000, help_text="A user message for the turn.")
    replace = serializers.BooleanField(
        required=False, default=False, help_text="The input replaces the turn's last user message instead of adding one."
    )


class TurnResumeView(APIView):
    """POST /v1/turns/{id}/resume."""

    required_scopes = {"POST": roles.TURNS_EXECUTE}

    @extend_schema(
        operation_id="turns_resume",
        summary="Resume an interrupted turn",
        description=(
            "Queues the turn again; a worker continues from its persisted request. With `input`, a user message is "
            "added (or, with `replace: true`, the last one is edited) first. The partial answer gives way to the whole one."
        ),
        request=ResumeSerializer,
        responses={
            202: OpenApiResponse(TurnSerializer),
            404: OpenApiResponse(OpenApiTypes.OBJECT),
            409: OpenApiResponse(OpenApiTypes.OBJECT, description="The turn is not interrupted (`turn_not_interrupted`)."),
        },
        tags=["turns"],
    )
    def post(self, request, turn_id):
        body = ResumeSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            turn = control.resume(
                turn_id, tenant_id=request.user.tenant.id, actor=_actor(request), input=body.validated_data.get("input"),
                replace=body.validated_data["replace"],
            )  # fmt: skip
        except Turn.DoesNotExist:
            raise NotFound() from None
        except control.NotResumable as refused:
            raise ApiError(409, str(refused), code="turn_not_interrupted") from None
        enqueue_turn(turn.id)
        return Response(TurnSerializer(_turn_or_404(request, turn.id)).data, status=202)


class ConversationInterruptView(APIView):
    """POST /v1/conversations/{id}/interrupt."""

    required_scopes = {"POST": roles.TURNS_EXECUTE}

    @extend_schema(
        operation_id="conversations_interrupt",
        summary="Interrupt a conversation's turns",
        description="Interrupts every unfinished turn of the conversation (see POST /v1/turns/{id}/interrupt); lists them.",
        request=None,
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT), 404: OpenApiResponse(OpenApiTypes.OBJECT)},
        tags=["conversations"],
    )
    def post(self, request, conversation_id):
        tenant = request.user.tenant
        if not Conversation.objects.filter(id=conversation_id, tenant=tenant).exists():
            raise NotFound()
        stopped = []
        unfinished = Turn.objects.filter(conversation_id=conversation_id, tenant=tenant, status__in=UNFINISHED).order_by("seq")
        for turn_id in unfinished.values_list("id", flat=True):
            try:
                done = control.request_stop(turn_id, tenant_id=tenant.id, kind=Stop.INTERRUPT, actor=_actor(request))
            except control.TurnAlreadyFinished:
                continue  # it ended meanwhile
            if done.following is not None:
                enqueue_turn(done.following)
            stopped.append(str(turn_id))
        return Response({"object": "list", "data": [TurnSerializer(_turn_or_404(request, t)).data for t in stopped]})


class ApprovalSerializer(serializers.ModelSerializer):
    object = serializers.SerializerMethodField()

    class Meta:
        model = Approval
        fields = ["id", "object", "turn", "status", "tool_calls", "edited_tool_calls", "reason", "decided_by", "decided_at",
                  "expires_at", "created_at"]  # fmt: skip

    def get_object(self, approval: Approval) -> str:
        return "approval"


class DecisionSerializer(serializers.Serializer):
    approve = serializers.BooleanField()
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)
    arguments = serializers.DictField(
        child=serializers.JSONField(), required=False, help_text="Edited arguments: {tool call id: arguments object}."
    )


class ApprovalListView(APIView):
    """GET /v1/approvals."""

    required_scopes = {"GET": roles.TURNS_READ}

    @extend_schema(
        operation_id="approvals_list",
        summary="List approvals",
        description="Tool calls held for a person's decision, newest first; `?status=pending` for those waiting.",
        responses={200: ApprovalSerializer(many=True)},
        tags=["approvals"],
    )
    def get(self, request):
        approvals_ = Approval.objects.filter(tenant=request.user.tenant)
        wanted = request.query_params.get("status")
        if wanted:
            if wanted not in ApprovalStatus.values:
                raise ApiError(400, f"status must be one of {', '.join(ApprovalStatus.values)}.", param="status", code="invalid_value")
            approvals_ = approvals_.filter(status=wanted)
        return Response({"object": "list", "data": ApprovalSerializer(approvals_[:200], many=True).data})


class ApprovalView(APIView):
    """GET /v1/approvals/{id}; POST /v1/approvals/{id} decides it."""

    required_scopes = {"GET": roles.TURNS_READ, "POST": roles.TURNS_EXECUTE}

    def _approval(self, request, approval_id) -> Approval:
        try:
            approval = Approval.objects.filter(id=approval_id, tenant=request.user.tenant).first()
        except DjangoValidationError:
            approval = None
        if approval is None:
            raise NotFound()
        return approval

    @extend_schema(operation_id="approvals_read", summary="Read an approval", responses={200: ApprovalSerializer}, tags=["approvals"])
    def get(self, request, approval_id):
        return Response(ApprovalSerializer(self._approval(request, approval_id)).data)

    @extend_schema(
        operation_id="approvals_decide",
        summary="Approve or deny held tool calls",
        description=(
            "`approve: true`: the calls (with `arguments` edited, if given) are the turn's answer. `approve: false`: the "
            "model is told they were denied (with `reason`) and answers again. Audited."
        ),
        request=DecisionSerializer,
        responses={
            200: ApprovalSerializer,
            400: OpenApiResponse(OpenApiTypes.OBJECT, description="Edited arguments for a call it does not hold."),
            404: OpenApiResponse(OpenApiTypes.OBJECT),
            409: OpenApiResponse(OpenApiTypes.OBJECT, description="Already decided (`approval_not_pending`)."),
        },
        tags=["approvals"],
    )
    def post(self, request, approval_id):
        approval = self._approval(request, approval_id)
        body = DecisionSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data: dict[str, Any] = body.validated_data
        try:
            decision = approvals.decide(
                approval.id, tenant_id=request.user.tenant.id, approve=data["approve"], actor=_actor(request), reason=data["reason"],
                arguments=data.get("arguments"),
            )  # fmt: skip
        except approvals.ApprovalNotPending as decided:
            raise ApiError(409, str(decided), code="approval_not_pending") from None
        except approvals.BadEditedArguments as bad:
            raise ApiError(400, str(bad), param="arguments", code="invalid_value") from None
        for turn_id in (decision.following, decision.requeued):
            if turn_id is not None:
                enqueue_turn(turn_id)
        return Response(ApprovalSerializer(decision.approval).data)
