"""Request and response serializers for the agents API (OpenAI's shapes where OpenAI has one)."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from agents.models import Agent, Conversation, Message, Turn, TurnEventRecord
from sentinel_site import strict

ROLES = ("system", "developer", "user", "assistant", "tool")


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string"},
            {
                "type": "array",
                "items": {"type": "object", "properties": {"type": {"type": "string", "enum": ["text"]}, "text": {"type": "string"}}},
            },
        ],
        "nullable": True,
    }
)
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


class ToolCallFunctionSerializer(serializers.Serializer):
    name = strict.CharField(max_length=64)
    arguments = strict.CharField(allow_blank=True)


class ToolCallSerializer(serializers.Serializer):
    id = strict.CharField(max_length=100)
    type = serializers.ChoiceField(choices=["function"])
    function = ToolCallFunctionSerializer()


class ChatMessageSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=ROLES)
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


class FunctionDefinitionSerializer(serializers.Serializer):
    name = strict.RegexField(r"^[A-Za-z0-9_-]{1,64}$")
    description = strict.CharField(required=False, allow_blank=True)
    parameters = serializers.JSONField(required=False)
    strict = serializers.BooleanField(required=False, allow_null=True)


class ToolSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=["function"])
    function = FunctionDefinitionSerializer()


class StreamOptionsSerializer(serializers.Serializer):
    include_usage = serializers.BooleanField(required=False, default=False)


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
    temperature = serializers.FloatField(required=False, allow_null=True, min_value=0, max_value=2)
    top_p = serializers.FloatField(required=False, allow_null=True, min_value=0, max_value=1)
    max_tokens = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    max_completion_tokens = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    n = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=1, help_text="Only 1 is supported.")
    stop = serializers.JSONField(required=False, allow_null=True)
    presence_penalty = serializers.FloatField(required=False, allow_null=True, min_value=-2, max_value=2)
    frequency_penalty = serializers.FloatField(required=False, allow_null=True, min_value=-2, max_value=2)
    seed = serializers.IntegerField(required=False, allow_null=True)
    tools = ToolSerializer(many=True, required=False, allow_null=True)
    tool_choice = serializers.JSONField(required=False, allow_null=True)
    parallel_tool_calls = serializers.BooleanField(required=False, allow_null=True)
    response_format = serializers.JSONField(required=False, allow_null=True)
    logit_bias = serializers.DictField(child=serializers.FloatField(), required=False, allow_null=True)
    user = strict.CharField(required=False, allow_null=True, max_length=256)

    def validate_messages(self, value):
        limit = settings.SENTINEL["MAX_MESSAGES_PER_REQUEST"]
        if len(value) > limit:
            raise serializers.ValidationError(f"at most {limit} messages per request")
        return value

    def validate_stop(self, value):
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, list) and len(value) <= 4 and all(isinstance(s, str) for s in value):
            return value
        raise serializers.ValidationError("must be a string or a list of up to 4 strings")

    def validate_tool_choice(self, value):
        if value is None or value in ("none", "auto", "required"):
            return value
        if isinstance(value, dict) and value.get("type") == "function" and isinstance(value.get("function"), dict):
            return value
        raise serializers.ValidationError("must be 'none', 'auto', 'required' or {'type': 'function', 'function': {'name': ...}}")

    def validate_response_format(self, value):
        if value is None or (isinstance(value, dict) and value.get("type") in ("text", "json_object", "json_schema")):
            return value
        raise serializers.ValidationError("must be an object with type text, json_object or json_schema")


class AgentSerializer(strict.ModelSerializer):
    """An agent: the model it calls, what it is told, and how much it remembers."""

    provider_api_key = strict.CharField(write_only=True, required=False, allow_blank=True, max_length=500)
    has_provider_api_key = serializers.SerializerMethodField()

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

    def validate_name(self, value: str) -> str:
        tenant = self.context["tenant"]
        clash = Agent.objects.filter(tenant=tenant, name=value)
        if self.instance is not None:
            clash = clash.exclude(pk=self.instance.pk)
        if clash.exists():
            raise serializers.ValidationError("an agent with this name already exists")
        return value

    def validate_default_params(self, value):
        if not isinstance(value, dict):
            raise serializers.ValidationError("must be an object")
        return value


class ConversationSerializer(serializers.ModelSerializer):
    agent = serializers.SlugRelatedField(slug_field="name", read_only=True)

    class Meta:
        model = Conversation
        fields = ["id", "agent", "title", "metadata", "created_at", "updated_at"]


class MessageSerializer(serializers.ModelSerializer):
    class Meta:
        model = Message
        fields = ["id", "role", "content", "name", "tool_calls", "tool_call_id", "turn", "seq", "index", "created_at"]


class TurnSerializer(serializers.ModelSerializer):
    agent = serializers.SlugRelatedField(slug_field="name", read_only=True)
    usage = serializers.SerializerMethodField()
    events_url = serializers.SerializerMethodField()
    response = serializers.SerializerMethodField()

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

    def get_usage(self, turn: Turn) -> dict:
        return {"prompt_tokens": turn.prompt_tokens, "completion_tokens": turn.completion_tokens, "total_tokens": turn.total_tokens}

    def get_events_url(self, turn: Turn) -> str:
        return f"/v1/turns/{turn.id}/events"

    def get_response(self, turn: Turn) -> dict | None:
        """The chat.completion, once the turn has succeeded."""
        from agents import openai_format

        if turn.status != "succeeded" or turn.output is None:
            return None
        return openai_format.completion(
            turn_id=turn.id,
            created=int(turn.created_at.timestamp()),
            model=turn.agent.name,
            content=turn.output.content,
            tool_calls=turn.output.tool_calls or [],
            finish_reason=turn.finish_reason,
            prompt_tokens=turn.prompt_tokens,
            completion_tokens=turn.completion_tokens,
        )


class TurnEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = TurnEventRecord
        fields = ["attempt", "seq", "kind", "from_state", "to_state", "payload", "created_at"]
