"""Request and response shapes of /v1/runs."""

from __future__ import annotations

import re
from typing import Any

from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from agents.api.serializers import ChatMessageSerializer
from memory import shared
from runs.models import Pattern, Run, RunEvent, Step, StepKind
from sentinel_site import strict

MAX_AGENTS = 100
SHARED_ITEMS = 200  # a run's shared memory items shown with it (a run has at most 100 steps)
NAME = re.compile(r"^[-a-zA-Z0-9_]{1,64}$")
MAX_SECONDS = 86_400
AGGREGATES = ("concat", "first", "vote")
WORKFLOW_KINDS = [StepKind.AGENT, StepKind.LLM, StepKind.EMBED, StepKind.VECTOR_SEARCH, StepKind.TRANSFORM]


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string", "minLength": 1},
            {"type": "array", "items": {"$ref": "#/components/schemas/ChatMessageRequest"}, "minItems": 1},
        ]
    }
)
class InputField(serializers.Field):
    """A run's input: a text, or OpenAI chat messages."""

    default_error_messages = {"invalid": "must be a non-empty string or a non-empty list of chat messages"}

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, str) and data:
            return data
        if isinstance(data, list) and data:
            messages = ChatMessageSerializer(data=data, many=True)
            if not messages.is_valid():
                raise serializers.ValidationError(messages.errors)
            return [{key: value for key, value in message.items() if value is not None} for message in messages.validated_data]
        self.fail("invalid")

    def to_representation(self, value: Any) -> Any:
        return value


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string", "enum": list(AGGREGATES)},
            {"type": "object", "properties": {"agent": {"type": "string"}}, "required": ["agent"], "additionalProperties": False},
        ]
    }
)
class AggregateField(serializers.Field):
    """parallel: concat (every answer, labelled), first (the first to finish), vote (the most common),
    or {"agent": name} (an agent that gets every answer and writes the result)."""

    default_error_messages = {"invalid": "must be 'concat', 'first', 'vote' or {{'agent': <agent name>}}"}

    def to_internal_value(self, data: Any) -> Any:
        if data in AGGREGATES:
            return data
        if isinstance(data, dict) and set(data) == {"agent"} and isinstance(data["agent"], str) and data["agent"]:
            return {"agent": data["agent"]}
        self.fail("invalid")

    def to_representation(self, value: Any) -> Any:
        return value


class WorkflowStepSerializer(serializers.Serializer):
    id = strict.RegexField(r"^[A-Za-z0-9_-]{1,64}$", help_text="Unique within the workflow; templates read `{{steps.<id>.output}}`.")
    kind = serializers.ChoiceField(choices=WORKFLOW_KINDS)
    depends_on = serializers.ListField(child=strict.CharField(max_length=64), required=False, default=list, max_length=100)
    agent = strict.CharField(max_length=64, required=False, help_text="agent: whose turn; llm: whose provider settings.")
    template = strict.CharField(
        required=False, max_length=100_000, help_text="What the step is given (default `{{input}}`); transform: its output."
    )
    system = strict.CharField(required=False, max_length=100_000, help_text="llm: a system prompt.")
    k = serializers.IntegerField(required=False, min_value=1, max_value=50, help_text="vector_search: how many hits (default 5).")
    embedding = strict.CharField(required=False, max_length=64, help_text="vector_search: an embed step whose vector to search by.")
    scope_agent = strict.CharField(required=False, max_length=64, help_text="vector_search: only this agent's memories.")
    timeout_seconds = serializers.IntegerField(required=False, min_value=1, max_value=MAX_SECONDS)
    retries = serializers.IntegerField(required=False, min_value=0, max_value=5, default=0)


class WorkflowSerializer(serializers.Serializer):
    steps = WorkflowStepSerializer(many=True, allow_empty=False, max_length=100)
    timeout_seconds = serializers.IntegerField(required=False, min_value=1, max_value=MAX_SECONDS, help_text="The whole workflow's.")


class WorkflowOrNameSerializer(WorkflowSerializer):
    """A workflow inline, or the name of one declared in config (`manage.py config apply`)."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, str):
            if not NAME.match(data):
                raise serializers.ValidationError("a declared workflow's name is letters, digits, - and _ (at most 64)")
            return data
        return super().to_internal_value(data)


class WorkflowOrNameSchema(OpenApiSerializerExtension):
    """Documents WorkflowOrNameSerializer as what it takes: a name, or the workflow itself."""

    target_class = WorkflowOrNameSerializer

    def map_serializer(self, auto_schema, direction):
        inline = auto_schema.resolve_serializer(WorkflowSerializer, direction).ref
        name = {"type": "string", "pattern": NAME.pattern, "description": "A workflow declared in config."}
        return {"oneOf": [name, inline]}


class RunCreateSerializer(serializers.Serializer):
    """A multi-agent run: a pattern over your agents, or a workflow of steps."""

    pattern = serializers.ChoiceField(choices=Pattern.choices)
    input = InputField(help_text="A text, or OpenAI chat messages (given whole to a step whose template is `{{input}}`).")
    agents = serializers.ListField(
        child=strict.CharField(max_length=64),
        required=False,
        max_length=MAX_AGENTS,
        help_text="parallel, pipeline: the agents, in order; route: the candidates (default: every agent with a specialization).",
    )
    aggregate = AggregateField(required=False, allow_null=True)
    templates = serializers.ListField(
        child=strict.CharField(max_length=100_000),
        required=False,
        max_length=MAX_AGENTS,
        help_text="pipeline: one template per agent (default: the input, then the previous output).",
    )
    specialization = strict.CharField(required=False, max_length=200, help_text="broadcast: only agents whose specialization contains it.")
    router = strict.CharField(
        required=False,
        max_length=64,
        help_text="route: an agent that picks (a turn of its own, given the input and the candidates with their "
        "specializations, answering with a name); an answer naming no candidate falls back to embedding similarity.",
    )
    step_timeout_seconds = serializers.IntegerField(
        required=False, min_value=1, max_value=MAX_SECONDS, help_text="broadcast: how long each agent has to answer."
    )
    workflow = WorkflowOrNameSerializer(required=False, help_text="workflow: its steps inline, or the name of a declared one.")
    timeout_seconds = serializers.IntegerField(required=False, min_value=1, max_value=MAX_SECONDS, help_text="The whole run's time limit.")
    shared_memory = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Every agent step reads and writes one run-scoped memory: each step's input and answer are remembered "
        "as it ends, and every later step's context recalls them (nearest to its input first), whichever agent it is.",
    )
    max_cost = strict.DecimalField(
        max_digits=14, decimal_places=8, required=False, allow_null=True, help_text="USD; the run stops before a step that could cross it."
    )
    metadata = serializers.DictField(required=False, default=dict)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs["pattern"] == Pattern.WORKFLOW and "workflow" not in attrs:
            raise serializers.ValidationError({"workflow": "a workflow run needs `workflow`: an object with `steps`"})
        if attrs["pattern"] != Pattern.WORKFLOW and "workflow" in attrs:
            raise serializers.ValidationError({"workflow": "only a workflow run takes `workflow`"})
        if attrs.get("aggregate") is not None and attrs["pattern"] != Pattern.PARALLEL:
            raise serializers.ValidationError({"aggregate": "only a parallel run aggregates"})
        if "router" in attrs and attrs["pattern"] != Pattern.ROUTE:
            raise serializers.ValidationError({"router": "only a route run takes a router"})
        return attrs


class StepSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="key", help_text="The step's id within the run.")
    agent = serializers.SlugRelatedField(slug_field="name", read_only=True)
    usage = serializers.SerializerMethodField()
    result = serializers.SerializerMethodField()

    class Meta:
        model = Step
        fields = [
            "id",
            "kind",
            "agent",
            "depends_on",
            "state",
            "attempt",
            "turn",
            "input",
            "output",
            "result",
            "usage",
            "cost",
            "error",
            "checkpoint",
            "started_at",
            "finished_at",
        ]

    def get_usage(self, step: Step) -> dict[str, int]:
        return {"prompt_tokens": step.prompt_tokens, "completion_tokens": step.completion_tokens, "total_tokens": step.total_tokens}

    def get_result(self, step: Step) -> dict | None:
        """An embed step's vector is summarised, not sent (it is hundreds of numbers)."""
        if step.result and "vector" in step.result:
            return {key: value for key, value in step.result.items() if key != "vector"}
        return step.result


class SharedMemoryItemSerializer(serializers.Serializer):
    step = serializers.CharField(allow_null=True, help_text="The step whose turn it was given or said.")
    agent = serializers.CharField()
    role = serializers.CharField()
    text = serializers.CharField()
    message = serializers.CharField(allow_null=True, help_text="The message's id.")
    memory = serializers.CharField(help_text="Its long-term memory's id (a shared piece of a step's context names it).")
    occurred_at = serializers.DateTimeField()


class SharedMemorySerializer(serializers.Serializer):
    scope = serializers.CharField()
    message_count = serializers.IntegerField(help_text="Messages in the run's memory.")
    items = SharedMemoryItemSerializer(many=True, help_text=f"The oldest {SHARED_ITEMS} of them.")


class RunSerializer(serializers.ModelSerializer):
    object = serializers.SerializerMethodField()
    steps = StepSerializer(many=True, read_only=True)
    events_url = serializers.SerializerMethodField()
    shared_memory = serializers.SerializerMethodField(help_text="With shared_memory: what the run's memory holds; else null.")

    class Meta:
        model = Run
        fields = [
            "id",
            "object",
            "pattern",
            "status",
            "input",
            "aggregate",
            "max_cost",
            "cost",
            "timeout_seconds",
            "output",
            "result",
            "error",
            "metadata",
            "shared_memory",
            "steps",
            "events_url",
            "created_at",
            "started_at",
            "finished_at",
        ]

    def get_object(self, run: Run) -> str:
        return "run"

    def get_events_url(self, run: Run) -> str:
        return f"/v1/runs/{run.id}/events"

    @extend_schema_field(SharedMemorySerializer(allow_null=True))
    def get_shared_memory(self, run: Run) -> dict | None:
        if not run.shared_memory:
            return None
        count, items = shared.contents(run.tenant_id, run.memory_scope, limit=SHARED_ITEMS)
        shown = [
            {
                "step": (item.pop("conversation_metadata") or {}).get("step"),
                **{key: item[key] for key in ("agent", "role", "text", "message", "memory", "occurred_at")},
            }
            for item in items
        ]
        return {"scope": run.memory_scope, "message_count": count, "items": shown}


class RunEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = RunEvent
        fields = ["id", "kind", "step", "payload", "created_at"]
