"""OpenAI's chat completion request as msgspec structs: the fast lane of request validation.

`SENTINEL_REQUEST_VALIDATION=msgspec` (the default) checks a request body with these structs
instead of `ChatCompletionRequestSerializer`, whose nested serializers deep-copy about thirty fields
on every request (~1 ms of CPU, a twelfth of the web process's work per turn). The serializer
stays the documented schema (drf-spectacular reads it) and the one that words errors:

- The structs accept only what the serializer accepts, as the serializer would have it (the
  validated data is equal, and hashes the same for Idempotency-Key). They are stricter where DRF is
  lenient (`"0.5"` is a float to DRF, `"true"` a boolean, `5.0` an integer).
- Whatever they refuse goes to the serializer, which accepts the lenient forms or raises the error
  every client has always seen: the same status, `param` and message on both lanes, because on both
  lanes the serializer writes it. A bad request costs a little more than before; a good one less.

tests/agents/test_request_validation.py checks both properties (and that the structs refuse what
the serializer refuses), with listed cases and with generated bodies.
"""

from __future__ import annotations

import math
import re
import uuid
from typing import Annotated, Any, Literal

import msgspec
from django.conf import settings
from msgspec import UNSET, Meta, Struct, UnsetType

from agents.api.serializers import ChatCompletionRequestSerializer
from agents.models import Role

ROLES = frozenset(Role.values)
# FunctionDefinitionSerializer.name: DRF's RegexValidator searches with this, `$` and all.
FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
RESPONSE_FORMATS = ("text", "json_object", "json_schema")
TOOL_CHOICES = ("none", "auto", "required")
SEED_RANGE = range(-(2**63), 2**63)

# Non-blank strings, as DRF's CharField(allow_blank=False) wants them.
Text64 = Annotated[str, Meta(min_length=1, max_length=64)]
Text100 = Annotated[str, Meta(min_length=1, max_length=100)]


class TextPart(Struct):
    type: Literal["text"]
    text: str


class ToolCallFunction(Struct):
    name: Text64
    arguments: str


class ToolCall(Struct):
    id: Text100
    type: Literal["function"]
    function: ToolCallFunction


class ChatMessage(Struct):
    role: str  # one of ROLES: checked after decoding, against the model's own list
    content: str | list[TextPart] | UnsetType | None = UNSET
    name: Annotated[str, Meta(max_length=64)] | UnsetType = UNSET
    tool_calls: list[ToolCall] | UnsetType = UNSET
    tool_call_id: Text100 | UnsetType = UNSET


class FunctionDefinition(Struct):
    name: str  # FUNCTION_NAME, checked after decoding
    description: str | UnsetType = UNSET
    parameters: dict[str, Any] | UnsetType = UNSET
    strict: bool | UnsetType | None = UNSET


class Tool(Struct):
    type: Literal["function"]
    function: FunctionDefinition


class StreamOptions(Struct):
    include_usage: bool = False


class ChatCompletionRequest(Struct):
    """ChatCompletionRequestSerializer's fields; the checks a struct cannot state follow in `_checked`."""

    model: Annotated[str, Meta(min_length=1, max_length=200)]
    messages: list[ChatMessage]
    stream: bool = False
    stream_options: StreamOptions | UnsetType | None = UNSET
    conversation: str | UnsetType | None = UNSET  # parsed as DRF's UUIDField parses it
    multitask_strategy: Literal["enqueue", "reject", "interrupt", "rollback"] | UnsetType | None = UNSET
    temperature: Annotated[float, Meta(ge=0, le=2)] | UnsetType | None = UNSET
    top_p: Annotated[float, Meta(ge=0, le=1)] | UnsetType | None = UNSET
    max_tokens: Annotated[int, Meta(ge=1)] | UnsetType | None = UNSET
    max_completion_tokens: Annotated[int, Meta(ge=1)] | UnsetType | None = UNSET
    n: Annotated[int, Meta(ge=1, le=1)] | UnsetType | None = UNSET
    stop: str | Annotated[list[str], Meta(max_length=4)] | UnsetType | None = UNSET
    presence_penalty: Annotated[float, Meta(ge=-2, le=2)] | UnsetType | None = UNSET
    frequency_penalty: Annotated[float, Meta(ge=-2, le=2)] | UnsetType | None = UNSET
    seed: int | UnsetType | None = UNSET
    tools: list[Tool] | UnsetType | None = UNSET
    tool_choice: str | dict[str, Any] | UnsetType | None = UNSET
    parallel_tool_calls: bool | UnsetType | None = UNSET
    response_format: dict[str, Any] | UnsetType | None = UNSET
    logit_bias: dict[str, float] | UnsetType | None = UNSET
    user: Annotated[str, Meta(min_length=1, max_length=256)] | UnsetType | None = UNSET


class _Refused(Exception):
    """The fast lane will not vouch for this body: the serializer decides."""


# The optional top-level fields whose validated value is the decoded one, in the serializer's order.
_PLAIN = (
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "n",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "seed",
)


def validate(body: Any) -> dict[str, Any]:
    """The body's validated data, as ChatCompletionRequestSerializer has it; or its ValidationError."""
    if settings.SENTINEL["REQUEST_VALIDATION"] == "msgspec":
        data = fast(body)
        if data is not None:
            return data
    serializer = ChatCompletionRequestSerializer(data=body)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def fast(body: Any) -> dict[str, Any] | None:
    """The validated data by msgspec, or None where the serializer must decide (and word the error)."""
    try:
        request = msgspec.convert(body, ChatCompletionRequest)
        return _checked(request)
    except (msgspec.ValidationError, _Refused):
        return None


def _checked(r: ChatCompletionRequest) -> dict[str, Any]:
    """What the serializer's validate_* methods and custom fields check, and its validated data's shape:
    optional fields only when sent (or defaulted), nested objects as dicts, content parts joined."""
    if not r.messages or len(r.messages) > settings.SENTINEL["MAX_MESSAGES_PER_REQUEST"]:
        raise _Refused
    data: dict[str, Any] = {"model": r.model, "messages": [_message(m) for m in r.messages], "stream": r.stream}
    if r.stream_options is not UNSET:
        data["stream_options"] = None if r.stream_options is None else {"include_usage": r.stream_options.include_usage}
    if r.conversation is not UNSET:
        data["conversation"] = None if r.conversation is None else _uuid(r.conversation)
    if r.multitask_strategy is not UNSET:
        data["multitask_strategy"] = r.multitask_strategy
    for name in _PLAIN:
        value = getattr(r, name)
        if value is not UNSET:
            data[name] = value
    limit = settings.SENTINEL["MAX_OUTPUT_TOKENS"]
    for name in ("max_tokens", "max_completion_tokens"):
        if (data.get(name) or 0) > limit:
            raise _Refused
    if data.get("seed") is not None and data["seed"] not in SEED_RANGE:
        raise _Refused
    if r.tools is not UNSET:
        data["tools"] = None if r.tools is None else [_tool(tool) for tool in r.tools]
    if r.tool_choice is not UNSET:
        data["tool_choice"] = _tool_choice(r.tool_choice)
    if r.parallel_tool_calls is not UNSET:
        data["parallel_tool_calls"] = r.parallel_tool_calls
    if r.response_format is not UNSET:
        if r.response_format is not None and r.response_format.get("type") not in RESPONSE_FORMATS:
            raise _Refused
        data["response_format"] = r.response_format
    if r.logit_bias is not UNSET:
        if r.logit_bias is not None and not all(math.isfinite(bias) for bias in r.logit_bias.values()):
            raise _Refused  # DRF's FloatField takes only finite numbers; the bounded fields' limits refuse the rest
        data["logit_bias"] = r.logit_bias
    if r.user is not UNSET:
        data["user"] = r.user
    return data  # keys in the serializer's field order, as its validated data has them


def _message(m: ChatMessage) -> dict[str, Any]:
    """ChatMessageSerializer's fields and its validate(): what each role requires."""
    if m.role not in ROLES:
        raise _Refused
    message: dict[str, Any] = {"role": m.role}
    content = m.content
    if content is not UNSET:
        message["content"] = content if content is None or isinstance(content, str) else "".join(part.text for part in content)
    if m.name is not UNSET:
        message["name"] = m.name
    if m.tool_calls is not UNSET:
        message["tool_calls"] = [
            {"id": call.id, "type": call.type, "function": {"name": call.function.name, "arguments": call.function.arguments}}
            for call in m.tool_calls
        ]
    if m.tool_call_id is not UNSET:
        message["tool_call_id"] = m.tool_call_id
    content = message.get("content")
    if m.role == "assistant":
        if content is None and not message.get("tool_calls"):
            raise _Refused
    elif content is None:
        raise _Refused
    if m.role == "tool" and not message.get("tool_call_id"):
        raise _Refused
    if m.role != "assistant" and message.get("tool_calls"):
        raise _Refused
    return message


def _tool(tool: Tool) -> dict[str, Any]:
    f = tool.function
    if FUNCTION_NAME.search(f.name) is None:
        raise _Refused
    function: dict[str, Any] = {"name": f.name}
    if f.description is not UNSET:
        function["description"] = f.description
    if f.parameters is not UNSET:
        function["parameters"] = f.parameters
    if f.strict is not UNSET:
        function["strict"] = f.strict
    return {"type": tool.type, "function": function}


def _tool_choice(value: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
    """ToolChoiceField: the value as sent, when it is one of its forms."""
    if value is None or value in TOOL_CHOICES:
        return value
    if isinstance(value, dict) and value.get("type") == "function":
        function = value.get("function")
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            return value
    raise _Refused


def _uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(hex=value)  # as DRF's UUIDField reads a string
    except ValueError:
        raise _Refused from None
