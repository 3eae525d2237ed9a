"""Creating a response: the request translated, validated as a chat request, then admitted as a turn
with its response row in the same transaction (agents.admission: budget, audit, Idempotency-Key)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import transaction
from django.utils import timezone

from agents import control
from agents.admission import admit
from agents.api import schema
from agents.models import Stop, Turn
from budgets import audit
from budgets.models import ApiKey, Tenant
from responses import translate
from responses.models import Response
from sentinel_site import openai_ids
from sentinel_site.errors import ApiError

PARAMS = ("temperature", "top_p", "max_output_tokens", "parallel_tool_calls")


def create(
    *, tenant: Tenant, api_key: ApiKey | None, body: dict[str, Any], idempotency_key: str | None, enqueue: Callable[[Turn], None]
) -> Response:
    """The response for a validated request body (responses.api.serializers); its turn enqueued on commit."""
    if body.get("previous_response_id") and body.get("conversation") is not None:
        raise ApiError(400, "Send `previous_response_id` or `conversation`, not both.", param="previous_response_id", code="invalid_value")
    try:
        items = translate.input_items(body["input"])
        conversation = translate.conversation_id(body.get("conversation"))
        previous = _previous(tenant, body.get("previous_response_id"))
        if previous is not None:
            conversation = previous.turn.conversation_id  # continue its conversation: its memory holds the exchange
        chat = translate.chat_request(body, items, conversation)
    except translate.Untranslatable as refused:
        raise ApiError(400, str(refused), param=refused.param, code="invalid_value") from None
    data = schema.validate(chat)
    with transaction.atomic():
        admission = admit(tenant=tenant, api_key=api_key, data=data, idempotency_key=idempotency_key, enqueue=enqueue)
        if not admission.created and (existing := Response.objects.filter(turn=admission.turn).first()) is not None:
            return existing
        return Response.objects.create(
            tenant=tenant,
            api_key=api_key,
            turn=admission.turn,
            previous_response=previous,
            conversation_given=body.get("conversation") is not None,
            model=body["model"],
            instructions=body.get("instructions"),
            input_items=items,
            tools=body.get("tools") or [],
            tool_choice=body.get("tool_choice") or "auto",
            text=body.get("text") or {"format": {"type": "text"}},
            params={key: body[key] for key in PARAMS if body.get(key) is not None},
            metadata=body.get("metadata") or {},
            store=body.get("store", True),
            background=body.get("background", False),
        )


def _previous(tenant: Tenant, previous_id: str | None) -> Response | None:
    if not previous_id:
        return None
    found = _stored(tenant, previous_id)
    if found is None:
        raise ApiError(404, f"Previous response with id '{previous_id}' not found.", param="previous_response_id", code="not_found")
    return found


def _stored(tenant: Tenant, response_id: str) -> Response | None:
    try:
        uid = openai_ids.parse("resp_", response_id, "response")
    except ApiError:
        return None
    return Response.objects.filter(tenant=tenant, id=uid, store=True).select_related("turn").first()


def find(tenant: Tenant, response_id: str) -> Response:
    """A stored response of the tenant with its turn (and the turn's reply); 404 otherwise."""
    try:
        uid = openai_ids.parse("resp_", response_id, "response")
    except ApiError:
        uid = None
    found = (
        Response.objects.filter(tenant=tenant, id=uid, store=True)
        .select_related("turn__output", "turn__agent", "previous_response")
        .first()
        if uid
        else None
    )
    if found is None:
        raise ApiError(404, f"Response with id '{response_id}' not found.", param="response_id", code="not_found")
    return found


def cancel(response: Response, enqueue: Callable[[Any], None]) -> Response:
    """A background response is cancelled as any turn is (agents.control): one still queued ends at once,
    before any model call, its budget hold released; a running one stops at its next token, what was
    generated kept as a partial answer. An ended one is answered as it is."""
    if not response.background:
        raise ApiError(400, "Only responses created with `background: true` can be cancelled.", param="response_id", code="invalid_value")
    if not response.turn.is_finished:
        try:
            stopped = control.request_stop(
                response.turn_id, tenant_id=response.tenant_id, kind=Stop.CANCEL, actor=audit.actor_for_key(response.api_key)
            )
        except control.TurnAlreadyFinished:
            stopped = None
        Response.objects.filter(id=response.id).update(cancelled_at=timezone.now())
        if stopped is not None and stopped.following is not None:
            enqueue(stopped.following)
    return find(response.tenant, response.api_id)
