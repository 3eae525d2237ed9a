"""/v1/responses: create (wait, stream, or background), retrieve (or re-stream), cancel, input items, delete.

Async views, as chat completions are: a waiting or streaming client holds no thread, only a Redis
read on its turn's stream. Another tenant's response is a 404, exactly like one that does not exist.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from adrf.views import APIView as AsyncAPIView
from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.renderers import JSONRenderer

from agents import backpressure, streams
from agents.api.chat import SSE_HEADERS, EventStreamRenderer, error_response, sse
from agents.streams import StreamKind
from agents.tasks import enqueue_turn
from budgets import roles
from responses import creation, shapes
from responses.api.serializers import ResponseCreateSerializer
from responses.events import EventBuilder
from responses.models import Response
from sentinel_site.db import release_connection
from sentinel_site.errors import ApiError
from sentinel_site.params import IntegerParam

RESPONSE = OpenApiResponse(OpenApiTypes.OBJECT, description="A response object.")
NOT_FOUND = OpenApiResponse(OpenApiTypes.OBJECT, description="No such response (or not yours, or not stored).")
EVENTS = OpenApiResponse(
    OpenApiTypes.STR,
    description="Typed events (`response.created`, `response.output_text.delta`, ..., "
    "`response.completed`), each with its `sequence_number`.",
)
STARTING_AFTER = IntegerParam("starting_after", 0, 10**9, 0)
ITEMS_LIMIT = IntegerParam("limit", 1, 100, 20)


def _create(principal, body: dict[str, Any], idempotency_key: str | None) -> tuple[Response, dict[str, Any]]:
    """The response and its first snapshot; the connection goes back to the pool before any wait."""
    response = creation.create(
        tenant=principal.tenant,
        api_key=principal.api_key,
        body=body,
        idempotency_key=idempotency_key,
        enqueue=lambda turn: enqueue_turn(turn.id),
    )
    found = creation.find(principal.tenant, response.api_id) if response.store else _unstored(response)
    snapshot = shapes.response_object(found, found.turn)
    release_connection()
    return found, snapshot


def _unstored(response: Response) -> Response:
    return Response.objects.select_related("turn__output", "turn__agent", "previous_response").get(id=response.id)


def _snapshot(response_id) -> tuple[Response, dict[str, Any]]:
    response = Response.objects.select_related("turn__output", "turn__agent", "previous_response").get(id=response_id)
    return response, shapes.response_object(response, response.turn)


class ResponsesView(AsyncAPIView):
    """OpenAI's Responses API, answered by an agent turn run on a worker."""

    required_scopes = {"POST": roles.TURNS_EXECUTE}
    renderer_classes = [JSONRenderer, EventStreamRenderer]

    @extend_schema(
        operation_id="responses_create",
        summary="Create a response",
        description=(
            "`model` names one of your agents. `input` is a string or input items (messages, `function_call`, "
            "`function_call_output`); `instructions` becomes this turn's system message. `previous_response_id` or "
            "`conversation` continues a conversation: the agent's memory of it (recent window, summaries, recall) is "
            "the context. `tools` (function tools), `tool_choice` and `text.format` (structured outputs) pass through to "
            "the model. Each response is a turn: budgeted, audited, with its own events (`/v1/turns/{id}`). `background: "
            "true` answers `queued` at once; `stream: true` answers with typed events, each with a `sequence_number`."
        ),
        request=ResponseCreateSerializer,
        parameters=[OpenApiParameter("Idempotency-Key", {"type": "string", "maxLength": 255}, OpenApiParameter.HEADER, required=False)],
        responses={
            (200, "application/json"): RESPONSE,
            (200, "text/event-stream"): EVENTS,
            400: OpenApiResponse(OpenApiTypes.OBJECT),
            404: OpenApiResponse(OpenApiTypes.OBJECT),
            503: OpenApiResponse(OpenApiTypes.OBJECT),
            504: OpenApiResponse(OpenApiTypes.OBJECT),
        },
        examples=[OpenApiExample("Simple", request_only=True, value={"model": "assistant", "input": "Hello"})],
        tags=["responses"],
    )
    async def post(self, request):
        serializer = ResponseCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        body = dict(serializer.validated_data)
        idempotency_key = request.headers.get("Idempotency-Key") or None
        if idempotency_key is not None and len(idempotency_key) > 255:
            raise ApiError(400, "Idempotency-Key must be at most 255 characters.", param="Idempotency-Key", code="invalid_value")
        await backpressure.check_turn_queue()
        response, snapshot = await sync_to_async(_create)(request.user, body, idempotency_key)
        if body.get("stream"):
            return StreamingHttpResponse(_events(response, snapshot, -1), content_type="text/event-stream", headers=SSE_HEADERS)
        if body.get("background") or snapshot["status"] in ("completed", "failed", "cancelled"):
            return JsonResponse(snapshot)
        return await _wait(response)


async def _wait(response: Response) -> HttpResponse:
    try:
        async for event in streams.follow(response.turn_id, timeout=settings.SENTINEL["SYNC_WAIT_SECONDS"]):
            if event is not None and event.kind in (StreamKind.DONE, StreamKind.ERROR):
                break
    except TimeoutError:
        return ApiError(
            504,
            f"The response did not finish in time; it continues. Retrieve {response.api_id}.",
            type="timeout_error",
            code="turn_timeout",
        ).response()
    reloaded, body = await sync_to_async(_snapshot)(response.id)
    if body["status"] == "failed":
        return error_response(reloaded.turn.error or {})
    return JsonResponse(body)


async def _events(response: Response, snapshot: dict[str, Any], after: int) -> AsyncIterator[bytes]:
    """The typed events of the response's turn, from its start; those numbered `after` or lower are skipped."""
    builder = EventBuilder(response.turn)
    first = {
        **snapshot,
        "status": "queued" if response.background and snapshot["status"] == "queued" else "in_progress",
        "output": [],
        "output_text": "",
        "usage": None,
        "error": None,
    }

    def emit(events: list[dict[str, Any]]) -> list[bytes]:
        return [sse(event, event=event["type"]) for event in events if event["sequence_number"] > after]

    for chunk in emit(builder.start(first, {**first, "status": "in_progress"})):
        yield chunk
    if snapshot["status"] in ("completed", "failed", "cancelled") and not await streams.exists(response.turn_id):
        for chunk in emit(builder.done(snapshot) if snapshot["status"] == "completed" else builder.failed(snapshot)):
            yield chunk
        return
    try:
        async for event in streams.follow(response.turn_id, timeout=settings.SENTINEL["SYNC_WAIT_SECONDS"]):
            if event is None:
                yield b": keep-alive\n\n"
            elif event.kind == StreamKind.DELTA:
                for chunk in emit(builder.delta(event.data.get("content"))):
                    yield chunk
            elif event.kind in (StreamKind.DONE, StreamKind.ERROR):
                _, final = await sync_to_async(_snapshot)(response.id)
                for chunk in emit(builder.done(final) if final["status"] == "completed" else builder.failed(final)):
                    yield chunk
                return
    except TimeoutError:
        yield sse(ApiError(504, "The response did not finish in time.", type="timeout_error", code="turn_timeout").body(), event="error")


def _found(principal, response_id: str) -> tuple[Response, dict[str, Any]]:
    response = creation.find(principal.tenant, response_id)
    return response, shapes.response_object(response, response.turn)


class ResponseView(AsyncAPIView):
    """One response: read it (or stream it again from `starting_after`), or delete it."""

    required_scopes = {"GET": roles.TURNS_READ, "DELETE": roles.TURNS_EXECUTE}
    renderer_classes = [JSONRenderer, EventStreamRenderer]

    @extend_schema(
        operation_id="responses_retrieve",
        summary="Read a response",
        description="With `stream=true`: its typed events again, from the start or after `starting_after` (a sequence number).",
        parameters=[OpenApiParameter("stream", bool, required=False), STARTING_AFTER.openapi("Resume after this sequence number.")],
        responses={(200, "application/json"): RESPONSE, (200, "text/event-stream"): EVENTS, 404: NOT_FOUND},
        tags=["responses"],
    )
    async def get(self, request, response_id: str):
        response, snapshot = await sync_to_async(_found)(request.user, response_id)
        if request.query_params.get("stream", "").lower() in ("true", "1"):
            after = STARTING_AFTER.read(request) if "starting_after" in request.query_params else -1
            await sync_to_async(release_connection)()
            return StreamingHttpResponse(_events(response, snapshot, after), content_type="text/event-stream", headers=SSE_HEADERS)
        return JsonResponse(snapshot)

    @extend_schema(
        operation_id="responses_delete",
        summary="Delete a response",
        description="The response can no longer be read or continued. Its turn, events and messages stay (the audit record and "
        "the conversation's memory); forget messages with DELETE /v1/conversations/{id}/messages/{message_id}.",
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT, description="{id, object: response, deleted: true}"), 404: NOT_FOUND},
        tags=["responses"],
    )
    async def delete(self, request, response_id: str):
        response, _ = await sync_to_async(_found)(request.user, response_id)
        await Response.objects.filter(id=response.id).adelete()
        return JsonResponse({"id": response.api_id, "object": "response", "deleted": True})


class ResponseCancelView(AsyncAPIView):
    """Cancel a background response that has not started."""

    required_scopes = {"POST": roles.TURNS_EXECUTE}

    @extend_schema(
        operation_id="responses_cancel",
        summary="Cancel a background response",
        description="Cancels its turn (as POST /v1/turns/{id}/cancel): a queued one ends before any model call, its budget hold "
        "released; a running one stops at its next token. An ended one is answered as it is.",
        request=None,
        responses={200: RESPONSE, 400: OpenApiResponse(OpenApiTypes.OBJECT), 404: NOT_FOUND},
        tags=["responses"],
    )
    async def post(self, request, response_id: str):
        def cancel() -> dict[str, Any]:
            response = creation.cancel(creation.find(request.user.tenant, response_id), enqueue=enqueue_turn)
            return shapes.response_object(response, response.turn)

        return JsonResponse(await sync_to_async(cancel)())


class ResponseInputItemsView(AsyncAPIView):
    """The input items a response was asked with."""

    required_scopes = {"GET": roles.TURNS_READ}

    @extend_schema(
        operation_id="responses_input_items",
        summary="List a response's input items",
        parameters=[
            ITEMS_LIMIT.openapi(),
            OpenApiParameter("order", {"type": "string", "enum": ["asc", "desc"]}, required=False),
            OpenApiParameter("after", str, required=False),
        ],
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT, description="A list page of input items."), 404: NOT_FOUND},
        tags=["responses"],
    )
    async def get(self, request, response_id: str):
        response, _ = await sync_to_async(_found)(request.user, response_id)
        order = request.query_params.get("order", "desc")
        if order not in ("asc", "desc"):
            raise ApiError(400, "order must be `asc` or `desc`.", param="order", code="invalid_value")
        items = [shapes.input_item(response, index, item) for index, item in enumerate(response.input_items)]
        if order == "desc":
            items.reverse()
        after = request.query_params.get("after")
        if after:
            ids = [item["id"] for item in items]
            if after not in ids:
                raise ApiError(400, "`after` names no item of this response.", param="after", code="invalid_value")
            items = items[ids.index(after) + 1 :]
        limit = ITEMS_LIMIT.read(request)
        page = items[:limit]
        return JsonResponse(
            {
                "object": "list",
                "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": len(items) > limit,
            }
        )
