"""POST /v1/chat/completions and the turn event stream: async views, so a waiting or streaming
client holds no thread, only a Redis XREAD on its turn's stream."""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from adrf.views import APIView as AsyncAPIView
from asgiref.sync import sync_to_async
from django import db
from django.conf import settings
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.renderers import BaseRenderer, JSONRenderer

from agents import backpressure, control, openai_format, streams
from agents.admission import Admission, admit
from agents.api import schema
from agents.api.serializers import ChatCompletionRequestSerializer, ChatCompletionSerializer, TurnEventSerializer, TurnSerializer
from agents.models import EventKind, Stop, Turn, TurnEventRecord, TurnStatus
from agents.streams import StreamKind
from agents.tasks import enqueue_turn
from budgets import audit, roles
from budgets.auth import Principal
from memory.context import recall_hint
from routing.hooks import Front
from sentinel_site.db import release_connection
from sentinel_site.errors import ApiError, not_found

log = logging.getLogger(__name__)
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# A Redis stream id, as Last-Event-ID: `<ms>[-<seq>]`, each part below 2**64 (20 digits at most).
STREAM_ID_PATTERN = r"^\d{1,20}(-\d{1,20})?$"
_STREAM_ID_PART_LIMIT = 2**64


class EventStreamRenderer(BaseRenderer):
    """Lets DRF's content negotiation accept `Accept: text/event-stream`; the view streams itself.

    Nothing is ever rendered with it: views return Django responses, and errors are JSON whatever
    the Accept header (see sentinel_site.errors.exception_handler).
    """

    media_type = "text/event-stream"
    format = "event-stream"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return json.dumps(data).encode()


def sse(data: Any, *, event: str | None = None, id: str | None = None) -> bytes:
    lines = []
    if id is not None:
        lines.append(f"id: {id}")
    if event is not None:
        lines.append(f"event: {event}")
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    lines.append(f"data: {payload}")
    return ("\n".join(lines) + "\n\n").encode()


def error_response(error: dict[str, Any]) -> JsonResponse:
    return ApiError(
        error.get("status", 502), error.get("message", "The turn failed."), type=error.get("type", "provider_error"), code=error.get("code")
    ).response()


def turn_headers(turn: Turn) -> dict[str, str]:
    return {"Sentinel-Turn-Id": str(turn.id), "Sentinel-Conversation-Id": str(turn.conversation_id)}


def finished_turn_response(turn: Turn) -> HttpResponse | None:
    """The answer for a turn already finished (an idempotent replay), read from PostgreSQL."""
    if turn.status in (TurnStatus.SUCCEEDED, TurnStatus.CANCELLED, TurnStatus.INTERRUPTED):
        return JsonResponse(TurnSerializer(turn).data["response"], headers=turn_headers(turn))
    if turn.status == TurnStatus.FAILED:
        return error_response(turn.error or {"status": 500, "message": "The turn failed.", "code": "turn_failed"})
    return None


def _prefers_async(request) -> bool:
    return any(part.strip().lower() == "respond-async" for part in request.headers.get("Prefer", "").split(","))


class ChatCompletionsView(AsyncAPIView):
    """OpenAI's chat completions, answered by an agent turn run on a worker."""

    required_scopes = {"POST": roles.TURNS_EXECUTE}
    renderer_classes = [JSONRenderer, EventStreamRenderer]

    @extend_schema(
        operation_id="chat_completions_create",
        summary="Create a chat completion",
        description=(
            "OpenAI's chat completion. `model` names one of your agents (GET /v1/models). The request is stored and "
            "run as a turn by a worker. `stream: true` answers with Server-Sent Events in OpenAI's chunk format "
            "ending `data: [DONE]`. `Prefer: respond-async` answers 202 at once with the turn's URL. Send "
            "`conversation` (a Sentinel extra) to continue a conversation with only the new messages."
        ),
        request=ChatCompletionRequestSerializer,
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                {"type": "string", "maxLength": 255},
                OpenApiParameter.HEADER,
                required=False,
                description="Same key and body: the same turn. Same key, another body: 422.",
            ),
            OpenApiParameter(
                "Sentinel-On-Disconnect",
                {"type": "string", "enum": ["cancel", "continue"]},
                OpenApiParameter.HEADER,
                required=False,
                description="A stream whose client leaves cancels its turn (`cancel`, the default) or lets it finish (`continue`).",
            ),
            OpenApiParameter(
                "Sentinel-Dedup",
                {"type": "string", "enum": ["on", "off"]},
                OpenApiParameter.HEADER,
                required=False,
                description="`on`: an identical request in flight shares its provider call (header `Sentinel-Dedup: leader|shared`); "
                "`off`: never. Without it, requests without a conversation share when deterministic (temperature 0 or a seed), "
                "sampling ones when the agent's routing policy says so.",
            ),
            OpenApiParameter(
                "Sentinel-Cache",
                {"type": "string", "enum": ["use", "skip"]},
                OpenApiParameter.HEADER,
                required=False,
                description="`use`: answer from the agent's response cache if it keeps answers (header `Sentinel-Cache: hit|miss`); "
                "`skip`: never.",
            ),
            OpenApiParameter(
                "Sentinel-Latency-Budget-Ms",
                {"type": "integer", "minimum": 1, "maximum": 600000},
                OpenApiParameter.HEADER,
                required=False,
                description="A model group's deployment measured to answer within this many milliseconds is chosen.",
            ),
            OpenApiParameter(
                "Prefer",
                str,
                OpenApiParameter.HEADER,
                required=False,
                description="`respond-async` returns 202 Accepted with the turn instead of waiting.",
            ),
        ],
        responses={
            (200, "application/json"): OpenApiResponse(ChatCompletionSerializer, description="A chat.completion object."),
            (200, "text/event-stream"): OpenApiResponse(OpenApiTypes.STR, description="chat.completion.chunk events, then `data: [DONE]`."),
            202: OpenApiResponse(TurnSerializer, description="Accepted: the queued turn; follow its events_url."),
            400: OpenApiResponse(OpenApiTypes.OBJECT, description="Invalid request; `error.param` names the field."),
            401: OpenApiResponse(OpenApiTypes.OBJECT, description="Missing or bad API key, or the provider rejected its key."),
            404: OpenApiResponse(OpenApiTypes.OBJECT, description="Unknown model (agent) or conversation."),
            422: OpenApiResponse(OpenApiTypes.OBJECT, description="Idempotency-Key reused with a different body."),
            503: OpenApiResponse(
                OpenApiTypes.OBJECT, description="Over budget (`budget_exceeded`) or overloaded (`overloaded`); see Retry-After."
            ),
            429: OpenApiResponse(OpenApiTypes.OBJECT, description="The model provider is rate limiting."),
            502: OpenApiResponse(OpenApiTypes.OBJECT, description="The model provider failed or could not be reached."),
            504: OpenApiResponse(OpenApiTypes.OBJECT, description="The model provider timed out, or the turn did not finish in time."),
        },
        examples=[
            OpenApiExample("Simple", request_only=True, value={"model": "assistant", "messages": [{"role": "user", "content": "Hello"}]})
        ],
        tags=["chat"],
    )
    async def post(self, request):
        data = schema.validate(request.data)
        idempotency_key = request.headers.get("Idempotency-Key") or None
        if idempotency_key is not None and len(idempotency_key) > 255:
            raise ApiError(400, "Idempotency-Key must be at most 255 characters.", param="Idempotency-Key", code="invalid_value")
        on_disconnect = (request.headers.get("Sentinel-On-Disconnect") or "cancel").strip().lower()
        if on_disconnect not in ("cancel", "continue"):
            raise ApiError(
                400, "Sentinel-On-Disconnect must be `cancel` or `continue`.", param="Sentinel-On-Disconnect", code="invalid_value"
            )
        await backpressure.check_turn_queue()
        prefers_async = _prefers_async(request)
        # A 202 (or a stream's first bytes) tells the client of the turn at once: its admission must be
        # on disk first. A plain wait tells it only with the answer, whose own commit flushes this one.
        lazily = not prefers_async and not data.get("stream")
        front = Front(request.headers, data, own_turn=prefers_async or idempotency_key is not None)  # routing: cache, shared streams
        admission = await sync_to_async(_admit)(
            request.user, data, idempotency_key, keep_connection=prefers_async, lazily=lazily, front=front
        )
        if front.cached is not None:
            return front.cached_response()
        if admission is None:  # an identical request is being admitted: ride its turn, or take one's own if it gave up
            admission = await front.join() or await sync_to_async(_admit)(request.user, data, None, keep_connection=False, lazily=lazily)
        turn = admission.turn
        headers = {**turn_headers(turn), **front.headers}
        front.follow(turn.id)
        if prefers_async:
            body = await sync_to_async(lambda: TurnSerializer(Turn.objects.select_related("agent", "output").get(id=turn.id)).data)()
            return JsonResponse(
                body, status=202, headers={**headers, "Location": f"/v1/turns/{turn.id}", "Preference-Applied": "respond-async"}
            )
        if not admission.created:
            finished = await sync_to_async(_finished_or_released)(turn.id)
            if finished is not None:
                return finished
        if data.get("stream"):
            include_usage = bool((data.get("stream_options") or {}).get("include_usage"))
            gone = front.on_gone(turn.id, None if on_disconnect == "continue" else _canceller(request.user, turn.id))
            return await _stream(turn, data["model"], include_usage, headers, on_gone=gone)
        return await _wait(turn, headers)


def _admit(
    principal: Principal,
    data: dict[str, Any],
    idempotency_key: str | None,
    *,
    keep_connection: bool,
    lazily: bool,
    front: Front | None = None,
) -> Admission | None:
    """admit(); then, unless the view reads the turn again, the connection goes back to the pool in
    the same thread hop (waiting on the turn needs none): one hop to a thread and back fewer per request.
    None, or a turn in flight, when routing answers without admitting (`front`, see routing/hooks.py)."""
    if front is not None and not front.before(principal):
        release_connection()
        return front.admission()
    try:
        admission = _admit_one(principal, data, idempotency_key, lazily)
    except BaseException:
        if front is not None:
            front.failed()
        raise
    if front is not None:
        front.admitted(admission.turn)
    for turn_id in admission.stop_turns:  # double-texting: interrupt or rollback what came before
        try:
            control.request_stop(turn_id, tenant_id=principal.tenant.id, kind=admission.stop, actor=audit.actor_for_key(principal.api_key))
        except control.TurnAlreadyFinished:
            continue  # it ended meanwhile; the new turn runs next (a stopped turn hands over to it)
    if admission.created and not keep_connection:
        release_connection()
    return admission


def _admit_one(principal: Principal, data: dict[str, Any], idempotency_key: str | None, lazily: bool) -> Admission:
    return admit(
        tenant=principal.tenant,
        api_key=principal.api_key,
        data=data,
        idempotency_key=idempotency_key,
        lazily=lazily,
        # The worker starts embedding the recall query while it claims the turn, if it will recall.
        enqueue=lambda turn: enqueue_turn(
            turn.id, recall_hint=recall_hint(data["messages"]) if turn.agent.has_memories else None, tenant_id=str(turn.tenant_id)
        ),
    )


def _finished_or_released(turn_id) -> HttpResponse | None:
    """An idempotent replay: the finished turn's answer, or None with the connection released to wait for it."""
    finished = finished_turn_response(Turn.objects.select_related("agent", "output").get(id=turn_id))
    if finished is None:
        release_connection()
    return finished


async def _reload(turn_id) -> Turn:
    return await Turn.objects.select_related("agent", "output").aget(id=turn_id)


async def _wait(turn: Turn, headers: dict[str, str]) -> HttpResponse:
    try:
        async for event in streams.follow(turn.id, timeout=settings.SENTINEL["SYNC_WAIT_SECONDS"]):
            if event is None:
                continue
            if event.kind == StreamKind.DONE:
                return JsonResponse(event.data["response"], headers=headers)
            if event.kind == StreamKind.ERROR:
                response = error_response(event.data)
                for name, value in headers.items():
                    response[name] = value
                return response
    except TimeoutError:
        pass
    error = ApiError(
        504,
        f"The turn did not finish in time; it continues. Poll /v1/turns/{turn.id}.",
        type="timeout_error",
        code="turn_timeout",
        headers={**headers, "Location": f"/v1/turns/{turn.id}"},
    )
    return error.response()


def _canceller(principal: Principal, turn_id) -> Callable[[], None]:
    """What a stream does when its client goes away before the end: cancel its turn, from a thread
    of its own (the stream's task is being torn down; nothing may be awaited there)."""
    tenant_id, actor = principal.tenant.id, audit.actor_for_key(principal.api_key)

    def cancel() -> None:
        try:
            control.request_stop(turn_id, tenant_id=tenant_id, kind=Stop.CANCEL, actor=actor)
        except control.TurnAlreadyFinished:
            pass  # it ended as the client left
        except Exception:
            log.warning("could not cancel the turn of a stream whose client left", exc_info=True)
        finally:
            db.connections.close_all()

    return lambda: threading.Thread(target=cancel, name="cancel-on-disconnect", daemon=True).start()


async def _stream(
    turn: Turn, model: str, include_usage: bool, headers: dict[str, str], on_gone: Callable[[], None] | None = None
) -> HttpResponse:
    """Wait for the first piece of the answer, so an early failure still gets its HTTP status.
    `on_gone`: called if the client leaves before the stream's end (Sentinel-On-Disconnect: cancel)."""
    events = streams.follow(turn.id, timeout=settings.SENTINEL["SYNC_WAIT_SECONDS"])
    created = int(turn.created_at.timestamp())
    first = None
    try:
        async for event in events:
            if event is not None and event.kind in (StreamKind.DELTA, StreamKind.DONE, StreamKind.ERROR):
                first = event
                break
    except TimeoutError:
        pass
    if first is None:
        return ApiError(
            504, f"The turn did not start in time; it continues. Poll /v1/turns/{turn.id}.", type="timeout_error", code="turn_timeout"
        ).response()
    if first.kind == StreamKind.ERROR:
        response = error_response(first.data)
        for name, value in headers.items():
            response[name] = value
        return response

    async def body() -> AsyncIterator[bytes]:
        ended = False
        try:
            async for part in _body():
                yield part
            ended = True
        finally:
            if not ended and on_gone is not None:
                on_gone()

    async def _body() -> AsyncIterator[bytes]:
        yield sse(openai_format.chunk(turn_id=turn.id, created=created, model=model, delta={"role": "assistant", "content": ""}))
        event = first
        try:
            while True:
                if event is None:
                    yield b": keep-alive\n\n"
                elif event.kind == StreamKind.DELTA:
                    yield sse(openai_format.chunk(turn_id=turn.id, created=created, model=model, delta=event.data))
                elif event.kind == StreamKind.DONE:
                    final = event.data["response"]
                    choice = final["choices"][0]
                    yield sse(
                        openai_format.chunk(turn_id=turn.id, created=created, model=model, delta={}, finish_reason=choice["finish_reason"])
                    )
                    if include_usage:
                        yield sse(openai_format.usage_chunk(turn_id=turn.id, created=created, model=model, usage_=final["usage"]))
                    yield b"data: [DONE]\n\n"
                    return
                elif event.kind == StreamKind.ERROR:
                    yield sse(
                        ApiError(
                            event.data.get("status", 502),
                            event.data.get("message", ""),
                            type=event.data.get("type", "provider_error"),
                            code=event.data.get("code"),
                        ).body()
                    )
                    return
                event = await anext(events)
        except (StopAsyncIteration, TimeoutError):
            yield sse(ApiError(504, "The turn did not finish in time.", type="timeout_error", code="turn_timeout").body())

    return StreamingHttpResponse(body(), content_type="text/event-stream", headers={**SSE_HEADERS, **headers})


class TurnEventsView(AsyncAPIView):
    """A turn's event log: JSON from PostgreSQL, or a live SSE stream that resumes from Last-Event-ID."""

    required_scopes = {"GET": roles.TURNS_READ}
    renderer_classes = [JSONRenderer, EventStreamRenderer]

    @extend_schema(
        operation_id="turns_events",
        summary="A turn's events",
        description=(
            "With `Accept: application/json`: the turn's immutable event log (state transitions, provider request "
            "and response, errors). With `Accept: text/event-stream`: live events (`state`, `delta`, `done`, `error`) "
            "as SSE whose ids resume the stream when sent back as `Last-Event-ID`."
        ),
        parameters=[
            OpenApiParameter("Last-Event-ID", {"type": "string", "pattern": STREAM_ID_PATTERN}, OpenApiParameter.HEADER, required=False)
        ],
        responses={
            (200, "application/json"): TurnEventSerializer(many=True),
            (200, "text/event-stream"): OpenApiResponse(OpenApiTypes.STR, description="SSE events: state, delta, done, error."),
            400: OpenApiResponse(OpenApiTypes.OBJECT, description="Last-Event-ID is not an id of a Redis stream."),
            404: OpenApiResponse(OpenApiTypes.OBJECT),
        },
        tags=["turns"],
    )
    async def get(self, request, turn_id):
        tenant = request.user.tenant
        turn = await Turn.objects.filter(id=turn_id, tenant=tenant).afirst()
        if turn is None:
            raise not_found("turn")
        if request.accepted_renderer.format != EventStreamRenderer.format:
            events = [e async for e in TurnEventRecord.objects.filter(turn=turn).order_by("attempt", "seq")]
            return JsonResponse({"object": "list", "data": TurnEventSerializer(events, many=True).data})
        after = request.headers.get("Last-Event-ID") or request.query_params.get("last_event_id") or "0"
        if not _valid_stream_id(after):
            raise ApiError(
                400,
                "Last-Event-ID must be an id from this stream (`<milliseconds>-<sequence>`, each below 2**64).",
                param="Last-Event-ID",
                code="invalid_value",
            )
        if not await streams.exists(turn.id) and turn.is_finished:
            return StreamingHttpResponse(_replay_from_log(turn), content_type="text/event-stream", headers=SSE_HEADERS)
        await sync_to_async(release_connection)()
        return StreamingHttpResponse(_live(turn.id, after), content_type="text/event-stream", headers=SSE_HEADERS)


def _valid_stream_id(value: str) -> bool:
    """Redis refuses a larger part only when the stream is read, after the response's headers are
    sent: check it here, while a 400 can still be answered."""
    if re.fullmatch(STREAM_ID_PATTERN[1:-1], value, re.ASCII) is None:
        return False
    return all(int(part) < _STREAM_ID_PART_LIMIT for part in value.split("-"))


async def _live(turn_id, after: str) -> AsyncIterator[bytes]:
    try:
        async for event in streams.follow(turn_id, after, timeout=settings.SENTINEL["SYNC_WAIT_SECONDS"]):
            if event is None:
                yield b": keep-alive\n\n"
            else:
                yield sse(event.data, event=event.kind, id=event.id)
    except TimeoutError:
        return


async def _replay_from_log(turn: Turn) -> AsyncIterator[bytes]:
    """The live stream expired: replay the durable log, ending with the outcome."""
    async for record in TurnEventRecord.objects.filter(turn=turn).order_by("attempt", "seq"):
        if record.kind == EventKind.STATE:
            yield sse({"from": record.from_state, "to": record.to_state}, event="state")
    reloaded = await _reload(turn.id)
    if reloaded.status == TurnStatus.SUCCEEDED:
        response = await sync_to_async(lambda: TurnSerializer(reloaded).data["response"])()
        yield sse({"response": response}, event="done")
    else:
        yield sse(reloaded.error or {}, event="error")
