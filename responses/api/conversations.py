"""/v1/conversations/{id}/items: OpenAI's Conversations API items over a conversation's messages.

The conversation resource itself (create, read, list, update, delete) is agents.api.resources'; what
memory keeps of it (messages, import, forgetting) is memory.api's. Adding items imports them as
memory's import does (the same rows, indexed for long-term memory), through memory.api.import_messages;
deleting one forgets its message as memory's forgetting does (memory.forget), everywhere it was stored.
"""

from __future__ import annotations

from types import SimpleNamespace

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from agents.api.serializers import ConversationSerializer
from agents.models import Conversation, Message
from budgets import audit, roles
from memory import api as memory_api
from memory import forget
from responses import items as conversation_items
from responses import translate
from sentinel_site.errors import ApiError, not_found
from sentinel_site.params import IntegerParam

LIMIT = IntegerParam("limit", 1, 100, 20)
ITEMS_PAGE = OpenApiResponse(OpenApiTypes.OBJECT, description="A list page of items: data, first_id, last_id, has_more.")


def _conversation(request, conversation_id) -> Conversation:
    found = Conversation.objects.filter(id=conversation_id, tenant=request.user.tenant).select_related("tenant").first()
    if found is None:
        raise not_found("conversation")
    return found


class ConversationItemsView(APIView):
    """List a conversation's items, or add items to it (without running a turn)."""

    required_scopes = {"GET": roles.TURNS_READ, "POST": roles.MEMORY_WRITE}

    @extend_schema(
        operation_id="conversations_items_list",
        summary="List a conversation's items",
        parameters=[
            LIMIT.openapi(),
            OpenApiParameter(
                "order", {"type": "string", "enum": ["asc", "desc"]}, required=False, description="Default `desc`, newest first."
            ),
            OpenApiParameter("after", str, required=False, description="An item id: the page starts after it."),
        ],
        responses={200: ITEMS_PAGE, 404: OpenApiResponse(OpenApiTypes.OBJECT)},
        tags=["conversations"],
    )
    def get(self, request, conversation_id):
        conversation = _conversation(request, conversation_id)
        order = request.query_params.get("order", "desc")
        if order not in ("asc", "desc"):
            raise ApiError(400, "order must be `asc` or `desc`.", param="order", code="invalid_value")
        limit = LIMIT.read(request)
        messages = Message.objects.filter(conversation=conversation)
        after = request.query_params.get("after")
        if after:
            anchor_id = conversation_items.message_id(after)
            anchor = messages.filter(id=anchor_id).first() if anchor_id else None
            if anchor is None:
                raise ApiError(400, "`after` names no item of this conversation.", param="after", code="invalid_value")
            # The anchor message itself is read again: items after `after` inside it come first.
            if order == "asc":
                messages = messages.filter(seq__gte=anchor.seq).exclude(seq=anchor.seq, index__lt=anchor.index)
            else:
                messages = messages.filter(seq__lte=anchor.seq).exclude(seq=anchor.seq, index__gt=anchor.index)
        ordering = ("seq", "index") if order == "asc" else ("-seq", "-index")
        found = []
        for message in messages.order_by(*ordering)[: limit + 2]:
            shaped = conversation_items.items_of(message)
            found += shaped if order == "asc" else list(reversed(shaped))
        if after:
            ids = [item["id"] for item in found]
            found = found[ids.index(after) + 1 :] if after in ids else found
        page = found[:limit]
        return Response(
            {
                "object": "list",
                "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": len(found) > limit,
            }
        )

    @extend_schema(
        operation_id="conversations_items_create",
        summary="Add items to a conversation",
        description="Messages, function calls and their outputs, stored as an import stores messages (no turn runs): "
        "the next response in this conversation remembers them.",
        request=inline_serializer(
            "ConversationItemsCreate", {"items": serializers.ListField(child=serializers.DictField(), max_length=20)}
        ),
        responses={200: ITEMS_PAGE, 400: OpenApiResponse(OpenApiTypes.OBJECT), 404: OpenApiResponse(OpenApiTypes.OBJECT)},
        tags=["conversations"],
    )
    def post(self, request, conversation_id):
        conversation = _conversation(request, conversation_id)
        raw = request.data.get("items") if isinstance(request.data, dict) else None
        if not isinstance(raw, list) or not 1 <= len(raw) <= 20:
            raise ApiError(400, "`items` must be a list of 1 to 20 items.", param="items", code="invalid_value")
        try:
            chat = translate.messages(translate.input_items(raw), None)
        except translate.Untranslatable as refused:
            raise ApiError(400, str(refused), param=refused.param.replace("input", "items", 1), code="invalid_value") from None
        # memory's import reads only the request's data: the translated messages, as its own clients send them.
        imported = memory_api.import_messages(SimpleNamespace(data={"messages": chat}, user=request.user), conversation)
        ids = [row["id"] for row in imported.data["data"]]
        rows = Message.objects.filter(id__in=ids).order_by("seq", "index")
        data = [item for message in rows for item in conversation_items.items_of(message)]
        return Response(
            {
                "object": "list",
                "data": data,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
                "has_more": False,
            }
        )


def _item(conversation: Conversation, item_id: str) -> tuple[Message, dict]:
    """The message behind the item, and the item; an id this conversation does not hold is a 404."""
    message_id = conversation_items.message_id(item_id)
    message = Message.objects.filter(conversation=conversation, id=message_id).first() if message_id else None
    item = next((found for found in conversation_items.items_of(message) if found["id"] == item_id), None) if message else None
    if message is None or item is None:
        raise not_found("item")
    return message, item


class ConversationItemView(APIView):
    """Read one item of a conversation, or delete it (forgetting its message)."""

    required_scopes = {"GET": roles.TURNS_READ, "DELETE": roles.MEMORY_WRITE}

    @extend_schema(
        operation_id="conversations_items_retrieve",
        summary="Read a conversation's item",
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT, description="The item."), 404: OpenApiResponse(OpenApiTypes.OBJECT)},
        tags=["conversations"],
    )
    def get(self, request, conversation_id, item_id):
        return Response(_item(_conversation(request, conversation_id), item_id)[1])

    @extend_schema(
        operation_id="conversations_items_destroy",
        summary="Delete a conversation's item",
        description="Forgets the item's message everywhere it was stored, as `DELETE /v1/conversations/{id}/messages/"
        "{message_id}` does; an assistant message with text and tool calls is one message, so deleting any of its items "
        "deletes them all. Answers the conversation, as OpenAI's does. A turn of this conversation still running is a 409.",
        responses={200: ConversationSerializer, 404: OpenApiResponse(OpenApiTypes.OBJECT), 409: OpenApiResponse(OpenApiTypes.OBJECT)},
        tags=["conversations"],
    )
    def delete(self, request, conversation_id, item_id):
        conversation = _conversation(request, conversation_id)
        message, _ = _item(conversation, item_id)
        forget.forget_message(conversation, message.id, actor=audit.actor_for_key(request.user.api_key))
        conversation.refresh_from_db()
        return Response(ConversationSerializer(conversation).data)
