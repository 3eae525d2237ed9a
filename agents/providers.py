"""The one model adapter: OpenAI's official SDK pointed at any OpenAI-compatible server.

Errors are classified here, once, into ProviderError with the status a client should see
(seed 000: network 502, bad provider key 401, provider rate limit 429, timeout 504).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import openai
from django.conf import settings

from sentinel_site import tracing

# Request fields passed to the provider untouched when a client sends them.
PASSTHROUGH_PARAMS = (
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "logit_bias",
    "user",
)


@dataclass(frozen=True)
class ProviderConfig:
    base_url: str
    api_key: str
    model: str
    timeout: float
    connect_timeout: float

    @classmethod
    def for_agent(cls, agent: Any) -> ProviderConfig:
        conf = settings.SENTINEL
        return cls(
            base_url=agent.provider_base_url or conf["LLM_BASE_URL"],
            api_key=agent.provider_api_key or conf["LLM_API_KEY"],
            model=agent.model or conf["LLM_MODEL"],
            timeout=conf["LLM_TIMEOUT"],
            connect_timeout=conf["LLM_CONNECT_TIMEOUT"],
        )

    @property
    def endpoint(self) -> str:
        """Where calls go, without secrets: a label for events, metrics and the circuit breaker."""
        return self.base_url or "https://api.openai.com/v1"


class ProviderError(Exception):
    """A failed provider call, classified for the client and for retry decisions."""

    def __init__(self, status: int, code: str, message: str, *, retryable: bool, type: str = "provider_error") -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retryable = retryable
        self.type = type

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "type": self.type, "code": self.code, "message": self.message}


@dataclass
class Completion:
    """What the model answered, normalised from either a full response or a stream."""

    content: str = ""
    tool_calls: list[dict] = field(default_factory=list)
    finish_reason: str = "stop"
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    model: str = ""
    latency_ms: int = 0
    first_token_ms: int | None = None


@lru_cache(maxsize=64)
def _client(base_url: str, api_key: str, timeout: float, connect_timeout: float) -> openai.OpenAI:
    # One client per endpoint keeps its HTTP connection pool warm across turns. Retries are ours
    # (recorded in the turn's events), so the SDK's own are off.
    return openai.OpenAI(
        base_url=base_url or None,
        api_key=api_key,
        timeout=openai.Timeout(timeout, connect=connect_timeout),
        max_retries=0,
    )


def client_for(config: ProviderConfig) -> openai.OpenAI:
    return _client(config.base_url, config.api_key, config.timeout, config.connect_timeout)


def request_body(config: ProviderConfig, messages: list[dict], params: dict[str, Any], *, stream: bool) -> dict:
    body: dict[str, Any] = {"model": config.model, "messages": messages}
    body.update({key: params[key] for key in PASSTHROUGH_PARAMS if params.get(key) is not None})
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def complete(config: ProviderConfig, body: dict) -> Completion:
    with _call_span(config, body) as span:
        result = _complete(config, body)
        _record_result(span, result)
        return result


def _complete(config: ProviderConfig, body: dict) -> Completion:
    started = time.monotonic()
    try:
        response = client_for(config).chat.completions.create(**body, extra_headers=tracing.outgoing_headers())
    except Exception as exc:
        raise classify(exc) from exc
    if not getattr(response, "choices", None):
        raise ProviderError(502, "provider_bad_response", "The model provider returned a response with no choices.", retryable=True)
    choice = response.choices[0]
    usage = response.usage
    return Completion(
        content=choice.message.content or "",
        tool_calls=[call.model_dump(exclude_none=True) for call in (choice.message.tool_calls or [])],
        finish_reason=choice.finish_reason or "stop",
        prompt_tokens=usage.prompt_tokens if usage else None,
        completion_tokens=usage.completion_tokens if usage else None,
        model=response.model or config.model,
        latency_ms=int((time.monotonic() - started) * 1000),
    )


def stream(config: ProviderConfig, body: dict, on_delta: Callable[[dict], None]) -> Completion:
    """Stream a completion, calling `on_delta` with each chunk's delta; return the whole of it."""
    with _call_span(config, body) as span:
        result = _stream(config, body, on_delta)
        _record_result(span, result)
        return result


def _stream(config: ProviderConfig, body: dict, on_delta: Callable[[dict], None]) -> Completion:
    started = time.monotonic()
    result = Completion(model=config.model)
    calls: dict[int, dict] = {}
    finished = False
    try:
        for chunk in client_for(config).chat.completions.create(**body, extra_headers=tracing.outgoing_headers()):
            if chunk.usage:
                result.prompt_tokens = chunk.usage.prompt_tokens
                result.completion_tokens = chunk.usage.completion_tokens
            if chunk.model:
                result.model = chunk.model
            if not chunk.choices:
                continue
            choice = chunk.choices[0]
            delta = choice.delta
            out: dict[str, Any] = {}
            if delta and delta.content:
                result.content += delta.content
                out["content"] = delta.content
            if delta and delta.tool_calls:
                out["tool_calls"] = [tc.model_dump(exclude_none=True) for tc in delta.tool_calls]
                _merge_tool_calls(calls, delta.tool_calls)
            if choice.finish_reason:
                result.finish_reason = choice.finish_reason
                finished = True
            if out:
                if result.first_token_ms is None:
                    result.first_token_ms = int((time.monotonic() - started) * 1000)
                on_delta(out)
    except ProviderError:
        raise
    except Exception as exc:
        raise classify(exc) from exc
    if not finished:
        # A stream must end with a finish_reason; one that stops short (or was never a stream)
        # is a broken answer, not an empty one.
        raise ProviderError(502, "provider_bad_response", "The model provider's stream ended without finishing.", retryable=True)
    result.tool_calls = [calls[index] for index in sorted(calls)]
    result.latency_ms = int((time.monotonic() - started) * 1000)
    return result


@contextmanager
def _call_span(config: ProviderConfig, body: dict) -> Iterator[tracing.Span]:
    """The CLIENT span of one provider call, with GenAI semantic-convention attributes: what was
    asked of which model and server, and the usage, never the messages or the answer."""
    with tracing.span(f"chat {body['model']}", "client", _call_attributes(config, body) if tracing.is_on() else None) as span:
        try:
            yield span
        except ProviderError as error:
            span.fail(error.code)  # the code, not the message: a provider's message may quote the request
            raise


def _call_attributes(config: ProviderConfig, body: dict) -> dict[str, Any]:
    endpoint = urlsplit(config.endpoint)
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": "openai",  # the API spoken; older name of gen_ai.provider.name
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": body["model"],
        "gen_ai.request.max_tokens": body.get("max_tokens") or body.get("max_completion_tokens"),
        "gen_ai.request.temperature": body.get("temperature"),
        "gen_ai.request.top_p": body.get("top_p"),
        "server.address": endpoint.hostname,
        "server.port": endpoint.port or (443 if endpoint.scheme == "https" else 80),
    }


def _record_result(span: tracing.Span, result: Completion) -> None:
    span.set_attribute("gen_ai.response.model", result.model)
    span.set_attribute("gen_ai.response.finish_reasons", [result.finish_reason])
    span.set_attribute("gen_ai.usage.input_tokens", result.prompt_tokens)
    span.set_attribute("gen_ai.usage.output_tokens", result.completion_tokens)


def _merge_tool_calls(calls: dict[int, dict], deltas: list) -> None:
    for delta in deltas:
        call = calls.setdefault(delta.index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}})
        if delta.id:
            call["id"] = delta.id
        if delta.function:
            call["function"]["name"] += delta.function.name or ""
            call["function"]["arguments"] += delta.function.arguments or ""


def classify(exc: Exception) -> ProviderError:
    """Map an SDK or transport exception to the error a client should see."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, openai.APITimeoutError):
        return ProviderError(504, "provider_timeout", "The model provider did not answer in time.", retryable=True)
    if isinstance(exc, openai.APIConnectionError):
        return ProviderError(502, "provider_unreachable", "The model provider could not be reached.", retryable=True)
    if isinstance(exc, openai.AuthenticationError):
        return ProviderError(401, "provider_auth_failed", "The model provider rejected its API key.", retryable=False)
    if isinstance(exc, openai.RateLimitError):
        return ProviderError(
            429, "provider_rate_limited", "The model provider is rate limiting requests.", retryable=True, type="rate_limit_error"
        )
    if isinstance(exc, openai.BadRequestError):
        return ProviderError(
            400,
            "provider_rejected_request",
            f"The model provider rejected the request: {_provider_message(exc)}",
            retryable=False,
            type="invalid_request_error",
        )
    if isinstance(exc, openai.APIStatusError):
        retryable = exc.status_code >= 500 or exc.status_code in (408, 409)
        return ProviderError(502, "provider_error", f"The model provider answered {exc.status_code}.", retryable=retryable)
    if isinstance(exc, (openai.APIResponseValidationError, json.JSONDecodeError, ValueError, KeyError, TypeError, AttributeError)):
        return ProviderError(502, "provider_bad_response", "The model provider returned a malformed response.", retryable=True)
    if isinstance(exc, OSError):
        return ProviderError(502, "provider_unreachable", "The model provider connection failed.", retryable=True)
    raise exc


def _provider_message(exc: openai.APIStatusError) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error", body) if isinstance(body, dict) else {}
    message = error.get("message") if isinstance(error, dict) else None
    return str(message or exc.message)[:500]
