"""/v1/runs: create (202, or the finished run with `Prefer: wait`), list, read, events, cancel.

Async views, so a client waiting on a run holds no thread, only a Redis read on the run's stream.
Another tenant's run is a 404, exactly like one that does not exist.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

from adrf.views import APIView as AsyncAPIView
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Prefetch
from django.http import JsonResponse, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.views import APIView

from agents.api.chat import SSE_HEADERS, EventStreamRenderer, sse
from budgets import audit, roles
from runs import config, dispatcher, plans, streams
from runs.api.serializers import RunCreateSerializer, RunEventSerializer, RunSerializer
from runs.models import RUN_UNFINISHED, Run, RunEvent, RunStatus, Step
from runs.submission import submit
from sentinel_site.db import release_connection
from sentinel_site.errors import ApiError, not_found
from sentinel_site.pagination import CursorPagination
from sentinel_site.params import IntegerParam

WAIT = re.compile(r"^\s*wait(?:\s*=\s*(\d{1,6}))?\s*$", re.IGNORECASE)
NOT_FOUND = OpenApiResponse(OpenApiTypes.OBJECT, description="No such run (or not yours).")


def _runs(tenant) -> Any:
    steps = Prefetch("steps", queryset=Step.objects.select_related("agent").order_by("position"))
    return Run.objects.filter(tenant=tenant).prefetch_related(steps)


def _run_or_404(tenant, run_id) -> Run:
    try:
        run = _runs(tenant).filter(id=run_id).first()
    except DjangoValidationError:
        run = None
    if run is None:
        raise not_found("run")
    return run


def _body(run: Run) -> dict:
    return RunSerializer(run).data


def _wait_seconds(request) -> float | None:
    """`Prefer: wait` (or `wait=<seconds>`, RFC 7240), or `?wait=true`: how long to wait for the end."""
    limit = settings.SENTINEL["SYNC_WAIT_SECONDS"]
    for part in request.headers.get("Prefer", "").split(","):
        match = WAIT.match(part)
        if match:
            return min(limit, float(match.group(1))) if match.group(1) else limit
    if request.query_params.get("wait", "").lower() in ("true", "1"):
        return limit
    return None


def _answer(run: Run, *, waited: bool) -> JsonResponse:
    headers = {"Location": f"/v1/runs/{run.id}"}
    if waited:
        headers["Preference-Applied"] = "wait"
    return JsonResponse(_body(run), status=200 if run.is_finished else 202, headers=headers)


class RunsView(AsyncAPIView):
    """Runs of several agents: parallel, pipeline, broadcast, route, workflow."""

    required_scopes = {"GET": roles.TURNS_READ, "POST": roles.TURNS_EXECUTE}

    @extend_schema(
        operation_id="runs_create",
        summary="Start a run",
        description=(
            "Runs several of your agents on one input. `parallel`: each agent answers the input, then `aggregate` "
            "(concat, first, vote, or {agent: name}). `pipeline`: each agent gets the previous one's output. "
            "`broadcast`: every agent of yours (or those whose specialization contains `specialization`). `route`: the "
            "agent whose specialization is nearest the input (embedding similarity), or the one a `router` agent names "
            "in a turn of its own (an answer naming no candidate falls back to similarity); the choice, the scores and "
            "any fallback's reason are a run event. "
            "`workflow`: a DAG of steps (agent, llm, embed, vector_search, transform) with `depends_on`, templates "
            "`{{input}}` and `{{steps.<id>.output}}`, per-step `timeout_seconds` and `retries`. Every agent step is a "
            "turn (budgeted, audited, with its own events). Answers 202 with the run at once; `Prefer: wait` (or "
            "`?wait=true`) answers 200 once it ends (202 if it is still running when the wait runs out). With "
            "`max_cost`, the run stops with `budget_exceeded` before a step that could cross it. With `shared_memory`, "
            "each agent step's input and answer go into one run-scoped memory that every later step's context recalls "
            "(whichever agent it is); the run shows it as `shared_memory`."
        ),
        request=RunCreateSerializer,
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                {"type": "string", "maxLength": 255},
                OpenApiParameter.HEADER,
                required=False,
                description="Same key and body: the same run. Same key, another body: 422.",
            ),
            OpenApiParameter("Prefer", str, OpenApiParameter.HEADER, required=False, description="`wait` or `wait=<seconds>`."),
            OpenApiParameter("wait", bool, OpenApiParameter.QUERY, required=False, description="`true`: as `Prefer: wait`."),
        ],
        responses={
            200: OpenApiResponse(RunSerializer, description="The run, ended (after `Prefer: wait`, or a replayed Idempotency-Key)."),
            202: OpenApiResponse(RunSerializer, description="Accepted: the run, queued or running; follow its events_url."),
            400: OpenApiResponse(OpenApiTypes.OBJECT, description="Invalid request; `error.param` names the field (a workflow's step)."),
            404: OpenApiResponse(OpenApiTypes.OBJECT, description="An agent named does not exist."),
            422: OpenApiResponse(OpenApiTypes.OBJECT, description="Idempotency-Key reused with a different body."),
        },
        examples=[
            OpenApiExample(
                "Parallel",
                request_only=True,
                value={"pattern": "parallel", "agents": ["researcher", "critic"], "input": "Is it safe?", "aggregate": "concat"},
            ),
            OpenApiExample(
                "Workflow",
                request_only=True,
                value={
                    "pattern": "workflow",
                    "input": "What did we decide about pricing?",
                    "workflow": {
                        "steps": [
                            {"id": "q", "kind": "embed"},
                            {"id": "recall", "kind": "vector_search", "depends_on": ["q"], "embedding": "q", "k": 3},
                            {
                                "id": "answer",
                                "kind": "agent",
                                "agent": "assistant",
                                "depends_on": ["recall"],
                                "template": "{{input}}\n\nNotes:\n{{steps.recall.output}}",
                            },
                        ],
                        "timeout_seconds": 120,
                    },
                },
            ),
        ],
        tags=["runs"],
    )
    async def post(self, request):
        serializer = RunCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        idempotency_key = request.headers.get("Idempotency-Key") or None
        if idempotency_key is not None and len(idempotency_key) > 255:
            raise ApiError(400, "Idempotency-Key must be at most 255 characters.", param="Idempotency-Key", code="invalid_value")
        principal = request.user
        try:
            submission = await sync_to_async(submit)(
                tenant=principal.tenant, api_key=principal.api_key, data=serializer.validated_data, idempotency_key=idempotency_key
            )
        except plans.PlanError as error:
            status = 404 if error.code in ("agent_not_found", "workflow_not_found") else 400
            raise ApiError(status, str(error), param=error.param, code=error.code) from None
        run_id = submission.run.id
        wait = _wait_seconds(request)
        if wait is not None:
            run = await sync_to_async(_run_or_404)(principal.tenant, run_id)
            if not run.is_finished:
                await sync_to_async(release_connection)()  # waiting needs no database connection
                await streams.wait_end(run_id, wait)
        run = await sync_to_async(_run_or_404)(principal.tenant, run_id)
        return await sync_to_async(_answer)(run, waited=wait is not None)  # its body may read the run's shared memory

    @extend_schema(
        operation_id="runs_list",
        summary="List runs",
        parameters=[
            OpenApiParameter("status", {"type": "string", "enum": RunStatus.values}, OpenApiParameter.QUERY, required=False),
            OpenApiParameter("cursor", str, OpenApiParameter.QUERY, required=False),
            OpenApiParameter("limit", {"type": "integer", "minimum": 1, "maximum": 200}, OpenApiParameter.QUERY, required=False),
        ],
        responses={
            200: inline_serializer(
                "PaginatedRunList",
                {
                    "next": serializers.CharField(allow_null=True),
                    "previous": serializers.CharField(allow_null=True),
                    "results": RunSerializer(many=True),
                },
            )
        },
        tags=["runs"],
    )
    async def get(self, request):
        return await sync_to_async(self._list)(request)

    def _list(self, request) -> JsonResponse:
        queryset = _runs(request.user.tenant)
        wanted = request.query_params.get("status")
        if wanted is not None:
            if wanted not in RunStatus.values:
                raise ApiError(400, f"status must be one of {', '.join(RunStatus.values)}.", param="status", code="invalid_value")
            queryset = queryset.filter(status=wanted)
        paginator = CursorPagination()
        page = paginator.paginate_queryset(queryset, request, view=self)
        return JsonResponse(paginator.get_paginated_response(RunSerializer(page, many=True).data).data)


class RunView(AsyncAPIView):
    required_scopes = {"GET": roles.TURNS_READ}

    @extend_schema(operation_id="runs_retrieve", summary="Read a run", responses={200: RunSerializer, 404: NOT_FOUND}, tags=["runs"])
    async def get(self, request, run_id):
        return JsonResponse(await sync_to_async(lambda: _body(_run_or_404(request.user.tenant, run_id)))())


class RunEventsView(AsyncAPIView):
    required_scopes = {"GET": roles.TURNS_READ}
    renderer_classes = [JSONRenderer, EventStreamRenderer]
    after = IntegerParam("after", 0, 2**62, 0)

    @extend_schema(
        operation_id="runs_events",
        summary="A run's events",
        description="The run's log, oldest first: steps started, turns admitted, steps ended or retried, the route's "
        "choice and scores, budget stops, the run's end. `after`: only events with a larger id. With `Accept: "
        "text/event-stream`: the same events live, as SSE whose ids resume the stream when sent back as `Last-Event-ID`; "
        "the stream ends after the run's last event.",
        parameters=[
            OpenApiParameter("after", {"type": "integer", "minimum": 0, "maximum": 2**62}, OpenApiParameter.QUERY, required=False),
            OpenApiParameter("Last-Event-ID", {"type": "string", "pattern": r"^\d{1,18}$"}, OpenApiParameter.HEADER, required=False),
        ],
        responses={
            (200, "application/json"): RunEventSerializer(many=True),
            (200, "text/event-stream"): OpenApiResponse(OpenApiTypes.STR, description="SSE: one event per run event, `event` its kind."),
            400: OpenApiResponse(OpenApiTypes.OBJECT, description="Last-Event-ID is not an event id."),
            404: NOT_FOUND,
        },
        tags=["runs"],
    )
    async def get(self, request, run_id):
        after = self.after.read(request)
        if request.accepted_renderer.format == EventStreamRenderer.format:
            resume = request.headers.get("Last-Event-ID")
            if resume is not None:
                if not re.fullmatch(r"\d{1,18}", resume, re.ASCII):
                    raise ApiError(400, "Last-Event-ID must be an event id from this stream.", param="Last-Event-ID", code="invalid_value")
                after = int(resume)
            run = await sync_to_async(_run_or_404)(request.user.tenant, run_id)
            await sync_to_async(release_connection)()
            return StreamingHttpResponse(_live_events(run.id, after), content_type="text/event-stream", headers=SSE_HEADERS)

        def read() -> dict:
            run = _run_or_404(request.user.tenant, run_id)
            events = RunEvent.objects.filter(run=run, id__gt=after).order_by("id")[:1000]
            return {"object": "list", "data": RunEventSerializer(events, many=True).data}

        return JsonResponse(await sync_to_async(read)())


LIVE_RECHECK_SECONDS = 1.0  # how often a live stream reads new events while the run has not ended
KEEP_ALIVE_SECONDS = 15.0


async def _live_events(run_id, after: int) -> AsyncIterator[bytes]:
    """A run's events as they are written: read from PostgreSQL (the log is the truth), woken at once
    by the run's end on Redis, and otherwise every LIVE_RECHECK_SECONDS; ends after the run's last event."""

    def read(after: int) -> tuple[list[dict], bool]:
        try:
            finished = Run.objects.filter(id=run_id).values_list("status", flat=True).first() not in RUN_UNFINISHED
            events = list(RunEvent.objects.filter(run_id=run_id, id__gt=after).order_by("id")[:500])
            return RunEventSerializer(events, many=True).data, finished
        finally:
            release_connection()

    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.SENTINEL["SYNC_WAIT_SECONDS"]
    quiet_since = loop.time()
    while loop.time() < deadline:
        events, finished = await sync_to_async(read)(after)
        for event in events:
            after = event["id"]
            yield sse(event, event=event["kind"], id=str(event["id"]))
        if events:
            quiet_since = loop.time()
            continue  # perhaps more than one page
        if finished:
            return
        if loop.time() - quiet_since >= KEEP_ALIVE_SECONDS:
            yield b": keep-alive\n\n"
            quiet_since = loop.time()
        await streams.wait_end(run_id, LIVE_RECHECK_SECONDS)


class RunCancelView(AsyncAPIView):
    required_scopes = {"POST": roles.TURNS_EXECUTE}

    @extend_schema(
        operation_id="runs_cancel",
        summary="Cancel a run",
        description="Stops the run: no further step starts, pending and running steps end `cancelled`, and the run "
        "ends `cancelled`. Its unfinished turns are cancelled as `POST /v1/turns/{id}/cancel` does (a queued one never "
        "starts, a running one stops within a second; their ids are the `turns_cancelled` event); what they spent is "
        "added to the run's `cost` as they end.",
        request=None,
        responses={200: RunSerializer, 404: NOT_FOUND, 409: OpenApiResponse(OpenApiTypes.OBJECT, description="The run had already ended.")},
        tags=["runs"],
    )
    async def post(self, request, run_id):
        def cancel() -> dict:
            run = _run_or_404(request.user.tenant, run_id)
            if dispatcher.cancel(run.id, actor=audit.actor_for_key(request.user.api_key)) is None:
                raise ApiError(409, f"This run already ended ({run.status}).", code="run_finished")
            audit.record("run.cancelled", actor=audit.actor_for_key(request.user.api_key), tenant_id=run.tenant_id, target=str(run.id))
            return _body(_run_or_404(request.user.tenant, run.id))

        return JsonResponse(await sync_to_async(cancel)())


class ConfigSchemaView(APIView):
    """The JSON Schema of a config file (runs/config.py): public, it holds nothing of anyone's."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="config_schema",
        summary="The config file's JSON Schema",
        description="The shape of a `SENTINEL_CONFIG_FILE` (TOML, read as JSON): a tenant, its agents and workflows.",
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT)},
        auth=[],
        tags=["config"],
    )
    def get(self, request):
        return JsonResponse(config.json_schema())
