"""Request and response serializers for the agents API (OpenAI's shapes where OpenAI has one)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.extensions import OpenApiSerializerExtension, OpenApiSerializerFieldExtension
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from agents import openai_format
from agents.models import Agent, Conversation, Message, MultitaskStrategy, Role, Turn, TurnEventRecord, TurnStatus
from agents.providers import PASSTHROUGH_PARAMS
from sentinel_site import egress, strict
from sentinel_site.errors import ApiError


class ContentField(serializers.Field):
    """OpenAI message content: a string, or a list of text parts (joined); null only when allowed."""

    default_error_messages = {
        "invalid": "must be a string or a list of text parts",
        "unsupported": "only text content parts are supported",
    }

    def to_internal_value(self, data):
        if isinstance(data, str):
            return data
        if isinstance(data, list):
            texts = []
            for part in data:
                if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                    self.fail("invalid")
                if part["type"] != "text":
                    self.fail("unsupported")
                if not isinstance(part.get("text"), str):
                    self.fail("invalid")
                texts.append(part["text"])
            return "".join(texts)
        self.fail("invalid")

    def to_representation(self, value):
        return value


class TextContentPartSerializer(serializers.Serializer):
    """One text part of a message's content (documentation only: ContentField reads the parts)."""

    type = serializers.ChoiceField(choices=["text"])
    text = serializers.CharField(allow_blank=True, trim_whitespace=False)


class ContentSchema(OpenApiSerializerFieldExtension):
    """Documents ContentField: a string, or a list of text parts.

    The part is a named component rather than an inline object: typed-client generators
    (openapi-python-client) cannot build a model for an inline object inside a union member.
    """

    target_class = ContentField

    def map_serializer_field(self, auto_schema, direction):
        part = auto_schema.resolve_serializer(TextContentPartSerializer, direction).ref
        return {"oneOf": [{"type": "string"}, {"type": "array", "items": part}]}


@extend_schema_field({"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": 4}]})
class StopField(serializers.Field):
    """OpenAI's `stop`: a string, or a list of up to 4 strings."""

    default_error_messages = {"invalid": "must be a string or a list of up to 4 strings"}

    def to_internal_value(self, data):
        if isinstance(data, str) or (isinstance(data, list) and len(data) <= 4 and all(isinstance(s, str) for s in data)):
            return data
        self.fail("invalid")

    def to_representation(self, value):
        return value


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string", "enum": ["none", "auto", "required"]},
            {
                "type": "object",
                "properties": {
                    "type": {"type": "string", "enum": ["function"]},
                    "function": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
                },
                "required": ["type", "function"],
            },
        ]
    }
)
class ToolChoiceField(serializers.Field):
    """OpenAI's `tool_choice`: none, auto, required, or the function to call."""

    # Doubled braces: DRF formats error messages.
    default_error_messages = {"invalid": "must be 'none', 'auto', 'required' or {{'type': 'function', 'function': {{'name': ...}}}}"}

    def to_internal_value(self, data):
        if data in ("none", "auto", "required"):
            return data
        if isinstance(data, dict) and data.get("type") == "function":
            function = data.get("function")
            if isinstance(function, dict) and isinstance(function.get("name"), str):
                return data
        self.fail("invalid")

    def to_representation(self, value):
        return value


@extend_schema_field(
    {
        "type": "object",
        "properties": {"type": {"type": "string", "enum": ["text", "json_object", "json_schema"]}},
        "required": ["type"],
    }
)
class ResponseFormatField(serializers.Field):
    """OpenAI's `response_format`: an object whose `type` is text, json_object or json_schema."""

    default_error_messages = {"invalid": "must be an object with type text, json_object or json_schema"}

    def to_internal_value(self, data):
        if isinstance(data, dict) and data.get("type") in ("text", "json_object", "json_schema"):
            return data
        self.fail("invalid")

    def to_representation(self, value):
        return value


class ToolCallFunctionSerializer(serializers.Serializer):
    name = strict.CharField(max_length=64)
    arguments = strict.CharField(allow_blank=True)


class ToolCallSerializer(serializers.Serializer):
    id = strict.CharField(max_length=100)
    type = serializers.ChoiceField(choices=["function"])
    function = ToolCallFunctionSerializer()


class ChatMessageSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=Role.values)
    content = ContentField(allow_null=True, required=False)
    name = strict.CharField(max_length=64, required=False, allow_blank=True)
    tool_calls = ToolCallSerializer(many=True, required=False)
    tool_call_id = strict.CharField(max_length=100, required=False)

    def validate(self, attrs):
        role = attrs["role"]
        content = attrs.get("content")
        if role == "assistant":
            if content is None and not attrs.get("tool_calls"):
                raise serializers.ValidationError({"content": "an assistant message needs content or tool_calls"})
        elif content is None:
            raise serializers.ValidationError({"content": f"is required for a {role} message"})
        if role == "tool" and not attrs.get("tool_call_id"):
            raise serializers.ValidationError({"tool_call_id": "is required for a tool message"})
        if role != "assistant" and attrs.get("tool_calls"):
            raise serializers.ValidationError({"tool_calls": "only assistant messages carry tool_calls"})
        return attrs


class ChatMessageSchema(OpenApiSerializerExtension):
    """Documents ChatMessageSerializer.validate as one schema per role, as OpenAI's own document does."""

    target_class = ChatMessageSerializer
    match_subclasses = True  # ImportMessageSerializer too, with its extra fields

    def map_serializer(self, auto_schema, direction):
        fields = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        properties, required = fields["properties"], fields.get("required", [])
        content = {key: value for key, value in properties["content"].items() if key != "nullable"}
        no_tool_calls = {**properties["tool_calls"], "maxItems": 0}

        def message(roles: list[str], *, needs: list[str], **overrides) -> dict:
            return {
                "type": "object",
                "properties": {**properties, "role": {"type": "string", "enum": roles}, **overrides},
                "required": sorted({*required, "role", *needs}),
            }

        assistant = message(["assistant"], needs=[])
        # "content or tool_calls", as an anyOf inside an allOf: the same constraint, and typed-client
        # generators (which read a schema's own anyOf as a union of its members) keep the properties.
        either = [
            {"type": "object", "properties": {"content": content}, "required": ["content"]},
            {"type": "object", "properties": {"tool_calls": {"type": "array", "minItems": 1}}, "required": ["tool_calls"]},
        ]
        assistant["allOf"] = [{"anyOf": either}]
        return {
            "oneOf": [
                message(["system", "developer", "user"], needs=["content"], content=content, tool_calls=no_tool_calls),
                assistant,
                message(["tool"], needs=["content", "tool_call_id"], content=content, tool_calls=no_tool_calls),
            ]
        }


class FunctionDefinitionSerializer(serializers.Serializer):
    name = strict.RegexField(r"^[A-Za-z0-9_-]{1,64}$")
    description = strict.CharField(required=False, allow_blank=True)
    parameters = serializers.DictField(required=False, help_text="A JSON Schema object.")
    strict = serializers.BooleanField(required=False, allow_null=True)


class ToolSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=["function"])
    function = FunctionDefinitionSerializer()


class StreamOptionsSerializer(serializers.Serializer):
    include_usage = serializers.BooleanField(required=False, default=False)


class OutputBoundField(serializers.IntegerField):
    """An output token count: at most SENTINEL_MAX_OUTPUT_TOKENS (checked by `_output_bound`)."""


class OutputBoundSchema(OpenApiSerializerFieldExtension):
    """Documents the bound the request is checked against, so a schema-valid request is never refused for it."""

    target_class = OutputBoundField

    def map_serializer_field(self, auto_schema, direction):
        schema = auto_schema._map_serializer_field(self.target, direction, bypass_extensions=True)
        return {**schema, "maximum": settings.SENTINEL["MAX_OUTPUT_TOKENS"]}


class ChatCompletionRequestSerializer(serializers.Serializer):
    """OpenAI's chat completion request, plus Sentinel's optional `conversation`."""

    model = strict.CharField(max_length=200, help_text="The agent's name (see GET /v1/models).")
    messages = ChatMessageSerializer(many=True, allow_empty=False)
    stream = serializers.BooleanField(required=False, default=False)
    stream_options = StreamOptionsSerializer(required=False, allow_null=True)
    conversation = serializers.UUIDField(
        required=False,
        allow_null=True,
        help_text="Sentinel extra: continue this conversation. Send only the new messages; the server supplies the history. "
        "With the openai SDK: extra_body={'conversation': id}. Omitted: a new conversation holding the messages sent.",
    )
    multitask_strategy = serializers.ChoiceField(
        choices=MultitaskStrategy.choices,
        required=False,
        allow_null=True,
        help_text="Sentinel extra: what this message does if the conversation's turn still runs: enqueue (wait), reject (409), "
        "interrupt (the running turn is interrupted, its partial answer kept) or rollback (it is cancelled and its messages "
        "removed). Default: the agent's.",
    )
    temperature = serializers.FloatField(required=False, allow_null=True, min_value=0, max_value=2)
    top_p = serializers.FloatField(required=False, allow_null=True, min_value=0, max_value=1)
    max_tokens = OutputBoundField(required=False, allow_null=True, min_value=1)
    max_completion_tokens = OutputBoundField(required=False, allow_null=True, min_value=1)
    n = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=1, help_text="Only 1 is supported.")
    stop = StopField(required=False, allow_null=True)
    presence_penalty = serializers.FloatField(required=False, allow_null=True, min_value=-2, max_value=2)
    frequency_penalty = serializers.FloatField(required=False, allow_null=True, min_value=-2, max_value=2)
    # A signed 64-bit integer, as providers take it; bounds in the field, so the OpenAPI schema states them.
    seed = serializers.IntegerField(required=False, allow_null=True, min_value=-(2**63), max_value=2**63 - 1)
    tools = ToolSerializer(many=True, required=False, allow_null=True)
    tool_choice = ToolChoiceField(required=False, allow_null=True)
    parallel_tool_calls = serializers.BooleanField(required=False, allow_null=True)
    response_format = ResponseFormatField(required=False, allow_null=True)
    logit_bias = serializers.DictField(child=serializers.FloatField(), required=False, allow_null=True)
    user = strict.CharField(required=False, allow_null=True, max_length=256)

    def validate_messages(self, value):
        limit = settings.SENTINEL["MAX_MESSAGES_PER_REQUEST"]
        if len(value) > limit:
            raise serializers.ValidationError(f"at most {limit} messages per request")
        return value

    def validate_max_tokens(self, value):
        return _output_bound(value)

    def validate_max_completion_tokens(self, value):
        return _output_bound(value)


def _output_bound(value: int | None) -> int | None:
    """A request may not ask for more output than the deployment's models can produce: refused,
    not clamped, so a client never gets a shorter answer than it asked for without knowing why."""
    limit = settings.SENTINEL["MAX_OUTPUT_TOKENS"]
    if value is not None and value > limit:
        raise serializers.ValidationError(f"at most {limit} tokens (SENTINEL_MAX_OUTPUT_TOKENS)")
    return value


class DefaultParamsSerializer(serializers.Serializer):
    """An agent's default request parameters: each checked as in a chat request, nothing else."""

    default_error_messages = {"unknown": "unknown parameter {name}; allowed: {allowed}"}

    def get_fields(self):
        request_fields = ChatCompletionRequestSerializer().get_fields()
        return {name: request_fields[name] for name in PASSTHROUGH_PARAMS}

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(PASSTHROUGH_PARAMS))
            if unknown:
                raise serializers.ValidationError(
                    {unknown[0]: self.error_messages["unknown"].format(name=unknown[0], allowed=", ".join(PASSTHROUGH_PARAMS))}
                )
        validated = super().to_internal_value(data)
        return {key: value for key, value in validated.items() if key in data}

    def to_representation(self, instance):
        return dict(instance or {})

    def validate_max_tokens(self, value):
        return _output_bound(value)

    def validate_max_completion_tokens(self, value):
        return _output_bound(value)


class AgentSerializer(strict.ModelSerializer):
    """An agent: the model it calls, what it is told, and how much it remembers."""

    provider_api_key = strict.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        max_length=500,
        help_text="Write-only. With provider_base_url, the only key sent there; changing the URL without sending a key clears it.",
    )
    has_provider_api_key = serializers.SerializerMethodField()
    default_params = DefaultParamsSerializer(required=False, help_text="Defaults for temperature, max_tokens, ... (as in a chat request)")

    class Meta:
        model = Agent
        fields = [
            "id",
            "name",
            "system_prompt",
            "model",
            "provider_base_url",
            "provider_api_key",
            "has_provider_api_key",
            "specialization",
            "default_params",
            "context_budget",
            "short_term_messages",
            "short_term_tokens",
            "recall_limit",
            "consolidation_threshold",
            "multitask_strategy",
            "requires_approval",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "created_at", "updated_at"]
        extra_kwargs = {
            "context_budget": {"min_value": 256, "max_value": 1_000_000},
            "short_term_messages": {"min_value": 1, "max_value": 1000},
            "short_term_tokens": {"min_value": 64, "max_value": 1_000_000},
            "recall_limit": {"min_value": 0, "max_value": 100},
            "consolidation_threshold": {"min_value": 500, "max_value": 10_000_000},
        }

    def get_has_provider_api_key(self, agent: Agent) -> bool:
        return bool(agent.provider_api_key)

    def update(self, instance: Agent, validated_data: dict) -> Agent:
        # A key sent with a new URL is meant for it: the model keeps it (see Agent.save).
        instance.provider_api_key_given = "provider_api_key" in validated_data
        return super().update(instance, validated_data)

    def validate_requires_approval(self, value: Any) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(name, str) and 0 < len(name) <= 64 for name in value) or len(value) > 128:
            raise serializers.ValidationError("a list of tool names (at most 128, each 1 to 64 characters)")
        return value

    def validate_provider_base_url(self, value: str) -> str:
        if value:
            try:
                egress.check_url(value)
            except egress.EgressDenied as denied:
                raise serializers.ValidationError(f"this URL is not allowed: {denied}") from None
        return value

    def validate_name(self, value: str) -> str:
        tenant = self.context["tenant"]
        clash = Agent.objects.live().filter(tenant=tenant, name=value)
        if self.instance is not None:
            clash = clash.exclude(pk=self.instance.pk)
        if clash.exists():  # a well-formed request that conflicts with what exists: 409, not 400
            raise ApiError(409, "An agent with this name already exists.", param="name", code="agent_name_taken")
        return value


class ConversationSerializer(serializers.ModelSerializer):
    agent = serializers.SlugRelatedField(slug_field="name", read_only=True)
    object = serializers.SerializerMethodField(help_text="`conversation`, as OpenAI's Conversations API has it.")

    class Meta:
        model = Conversation
        fields = ["id", "object", "agent", "title", "metadata", "created_at", "updated_at"]

    def get_object(self, conversation: Conversation) -> str:
        return "conversation"


TEXT_PARTS = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {"type": {"enum": ["input_text", "output_text", "text"]}, "text": {"type": "string"}},
        "required": ["type", "text"],
    },
}


@extend_schema_field({"oneOf": [{"type": "string"}, TEXT_PARTS]})
class ItemContentField(serializers.JSONField):
    """A string, or text parts joined."""


class ConversationItemSerializer(serializers.Serializer):
    """A message item of OpenAI's Conversations API: its text content as one chat message."""

    type = serializers.ChoiceField(choices=["message"], required=False, default="message")
    role = serializers.ChoiceField(choices=["user", "system", "developer", "assistant"])
    content = ItemContentField(help_text="A string, or text parts (`input_text`, `output_text`).")

    def validate_content(self, value):
        if isinstance(value, str):
            return value
        if isinstance(value, list) and all(
            isinstance(p, dict) and p.get("type") in ("input_text", "output_text", "text") and isinstance(p.get("text"), str) for p in value
        ):
            return "".join(p["text"] for p in value)
        raise serializers.ValidationError("must be a string or a list of text parts")


class ConversationCreateSerializer(serializers.Serializer):
    agent = strict.CharField(
        max_length=64, required=False, help_text="The agent's name; may be left out when the tenant has exactly one agent."
    )
    title = strict.CharField(max_length=200, required=False, allow_blank=True, default="")
    metadata = serializers.DictField(required=False, default=dict, allow_null=True)
    items = ConversationItemSerializer(many=True, required=False, max_length=20, help_text="Messages to start it with (OpenAI's shape).")


class ConversationUpdateSerializer(serializers.Serializer):
    metadata = serializers.DictField(required=False, allow_null=True, help_text="Replaces the conversation's metadata; null clears it.")
    title = strict.CharField(max_length=200, required=False, allow_blank=True)


class ConversationDeletedSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    object = serializers.ChoiceField(choices=["conversation.deleted"])
    deleted = serializers.BooleanField()


class MessageSerializer(serializers.ModelSerializer):
    class Meta:
        model = Message
        fields = ["id", "role", "content", "name", "tool_calls", "tool_call_id", "turn", "seq", "index", "created_at"]


class TokenUsageSerializer(serializers.Serializer):
    """OpenAI's `usage`: tokens sent, generated, and their sum."""

    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    total_tokens = serializers.IntegerField()


class CompletionToolCallFunctionSerializer(serializers.Serializer):
    name = serializers.CharField()
    arguments = serializers.CharField(allow_blank=True)


class CompletionToolCallSerializer(serializers.Serializer):
    """A tool call the model made, as it made it (no request-side limits: the model chose it)."""

    id = serializers.CharField()
    type = serializers.ChoiceField(choices=["function"])
    function = CompletionToolCallFunctionSerializer()


class CompletionMessageSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=["assistant"])
    content = serializers.CharField(allow_null=True, allow_blank=True, help_text="Null when the answer is tool calls only.")
    tool_calls = CompletionToolCallSerializer(many=True, required=False)


class CompletionChoiceSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    message = CompletionMessageSerializer()
    finish_reason = serializers.CharField(help_text="stop, length, tool_calls, or cancelled / interrupted for a partial answer.")
    logprobs = serializers.JSONField(allow_null=True, help_text="Always null.")


class ChatCompletionSerializer(serializers.Serializer):
    """OpenAI's chat.completion (documentation only: agents/openai_format.py builds it)."""

    id = serializers.CharField(help_text="chatcmpl-<the turn's id in hex>.")
    object = serializers.ChoiceField(choices=["chat.completion"])
    created = serializers.IntegerField()
    model = serializers.CharField(help_text="The agent's name.")
    choices = CompletionChoiceSerializer(many=True)
    usage = TokenUsageSerializer()


class TurnSerializer(serializers.ModelSerializer):
    agent = serializers.SlugRelatedField(slug_field="name", read_only=True)
    usage = serializers.SerializerMethodField()
    events_url = serializers.SerializerMethodField()
    response = serializers.SerializerMethodField()
    pending_approval = serializers.SerializerMethodField()

    class Meta:
        model = Turn
        fields = [
            "id",
            "object",
            "conversation",
            "agent",
            "status",
            "agent_state",
            "attempt",
            "model",
            "stream",
            "usage",
            "cost",
            "latency_ms",
            "provider_latency_ms",
            "first_token_ms",
            "finish_reason",
            "stop_requested",
            "pending_approval",
            "error",
            "response",
            "created_at",
            "started_at",
            "finished_at",
            "events_url",
        ]

    object = serializers.SerializerMethodField()

    def get_object(self, turn: Turn) -> str:
        return "turn"

    @extend_schema_field(TokenUsageSerializer)
    def get_usage(self, turn: Turn) -> dict:
        return {"prompt_tokens": turn.prompt_tokens, "completion_tokens": turn.completion_tokens, "total_tokens": turn.total_tokens}

    def get_events_url(self, turn: Turn) -> str:
        return f"/v1/turns/{turn.id}/events"

    def get_pending_approval(self, turn: Turn) -> str | None:
        """The approval a turn awaiting one waits on (GET /v1/approvals/{id})."""
        if turn.status != TurnStatus.AWAITING_APPROVAL:
            return None
        approval = turn.approvals.filter(status="pending").values_list("id", flat=True).first()
        return str(approval) if approval else None

    @extend_schema_field(ChatCompletionSerializer(allow_null=True))
    def get_response(self, turn: Turn) -> dict | None:
        """The chat.completion, once the turn has answered: succeeded, or cancelled or interrupted
        with what it had streamed (finish_reason says which)."""
        if turn.status == TurnStatus.SUCCEEDED and turn.output is None:
            return None
        if turn.status not in (TurnStatus.SUCCEEDED, TurnStatus.CANCELLED, TurnStatus.INTERRUPTED):
            return None
        return openai_format.completion(
            turn_id=turn.id,
            created=int(turn.created_at.timestamp()),
            model=turn.agent.name,
            content=turn.output.content if turn.output else "",
            tool_calls=(turn.output.tool_calls if turn.output else None) or [],
            finish_reason=turn.finish_reason,
            prompt_tokens=turn.prompt_tokens,
            completion_tokens=turn.completion_tokens,
        )


class TurnEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = TurnEventRecord
        fields = ["attempt", "seq", "kind", "from_state", "to_state", "payload", "created_at"]
