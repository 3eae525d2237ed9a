"""The one model adapter: OpenAI's official SDK pointed at any OpenAI-compatible server.

Errors are classified here, once, into ProviderError with the status a client should see
(seed 000: network 502, bad provider key 401, provider rate limit 429, timeout 504).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import httpx2
import openai
from django.conf import settings
from openai._httpx2 import request_exceptions, timeout_exceptions
from openai._streaming import SSEDecoder

from memory import tokens
from sentinel_site import egress, tracing

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


# Sent as the bearer to a tenant's own server when its agent has no key: never None, which would
# make the SDK read OPENAI_API_KEY from the environment, the deployment's own key.
NO_KEY = "sentinel-no-key"


@dataclass(frozen=True)
class ProviderConfig:
    base_url: str
    api_key: str
    model: str
    timeout: float
    connect_timeout: float
    tenant_url: bool = False  # the base URL is the agent's own: egress-checked at every connection
    deployment_key: bool = True  # the deployment pays for these calls (its key, its provider)
    tenant_id: str = ""

    @classmethod
    def for_agent(cls, agent: Any) -> ProviderConfig:
        """Where an agent's calls go, with which key. The deployment's key goes only to the
        deployment's base URL: an agent with its own URL sends only its own key (or none).
        An agent whose model names a model group goes where its route says (routing/route.py)."""
        routed = _model_group_config(agent)
        if routed is not None:
            return routed
        conf = settings.SENTINEL
        if agent.provider_base_url:
            base_url, api_key, tenant_url, deployment_key = agent.provider_base_url, agent.provider_api_key or NO_KEY, True, False
        else:
            base_url, tenant_url = conf["LLM_BASE_URL"], False
            api_key, deployment_key = (agent.provider_api_key, False) if agent.provider_api_key else (conf["LLM_API_KEY"], True)
        return cls(
            base_url=base_url,
            api_key=api_key,
            model=agent.model or conf["LLM_MODEL"],
            timeout=conf["LLM_TIMEOUT"],
            connect_timeout=conf["LLM_CONNECT_TIMEOUT"],
            tenant_url=tenant_url,
            deployment_key=deployment_key,
            tenant_id=str(agent.tenant_id),
        )

    @property
    def endpoint(self) -> str:
        """Where calls go, without secrets: a label for events, metrics and the circuit breaker.
        (An agent's URL cannot carry credentials; an operator's might, and they are cut off here.)"""
        url = self.base_url or "https://api.openai.com/v1"
        parts = urlsplit(url)
        return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl() if "@" in parts.netloc else url

    @property
    def breaker_key(self) -> str:
        """Which circuit breaker guards these calls: one per endpoint, credential and tenant, so
        one tenant's failing agent (its own URL, key or requests) never opens it for others."""
        credential = hashlib.sha256(self.api_key.encode()).hexdigest()[:16]
        return f"{self.endpoint}|{credential}|{self.tenant_id}"


def _no_model_groups(agent: Any) -> ProviderConfig | None:
    return None


_model_group_config: Callable[[Any], ProviderConfig | None] = _no_model_groups


def route_model_groups(resolver: Callable[[Any], ProviderConfig | None]) -> None:
    """Install the model group router (the routing app does, when it is ready): asked first by
    `ProviderConfig.for_agent`; None means the agent's model names no model group."""
    global _model_group_config
    _model_group_config = resolver


class ProviderError(Exception):
    """A failed provider call, classified for the client and for retry decisions.

    `upstream_status` is the provider's own HTTP status when it answered with one."""

    def __init__(
        self, status: int, code: str, message: str, *, retryable: bool, type: str = "provider_error", upstream_status: int | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retryable = retryable
        self.type = type
        self.upstream_status = upstream_status

    @property
    def means_provider_unwell(self) -> bool:
        """What a circuit breaker counts: the provider unreachable, slow, overloaded or failing
        (connection errors, timeouts, 429, 5xx), never a request it rightly refused."""
        if self.code in ("provider_timeout", "provider_unreachable", "provider_rate_limited"):
            return True
        return self.code == "provider_error" and (self.upstream_status or 0) >= 500

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

    def usage(self, prompt_estimate: int) -> tuple[int, int]:
        """Prompt and completion tokens as billed: the provider's counts where it reported them, our
        estimate of the prompt and our count of the answer where it did not (a stream without usage)."""
        prompt_tokens = self.prompt_tokens if self.prompt_tokens is not None else prompt_estimate
        completion_tokens = self.completion_tokens if self.completion_tokens is not None else tokens.count(self.content)
        return prompt_tokens, completion_tokens


@lru_cache(maxsize=256)
def _client(base_url: str, api_key: str, timeout: float, connect_timeout: float, tenant_url: bool, policy: tuple) -> openai.OpenAI:
    # One client per endpoint keeps its HTTP connection pool warm across turns. Retries are ours
    # (recorded in the turn's events), so the SDK's own are off. A tenant's URL gets a client
    # whose every connection passes the egress policy, and which follows no redirect. `policy`
    # (the allowlist, for a tenant's URL) is part of the key: the pool keeps its connections from
    # call to call (`_drain`), and a connection the policy allowed must not outlive the policy.
    limits = openai.Timeout(timeout, connect=connect_timeout)
    return openai.OpenAI(
        base_url=base_url or None,
        api_key=api_key,
        timeout=limits,
        max_retries=0,
        http_client=egress.guarded_http_client(limits) if tenant_url else None,
    )


# lru_cache computes a missing entry without a lock: a worker's threads starting together each
# built a client (and a connection pool) of their own for one endpoint, and all but one were
# dropped at once (mid-stream, before the raw lane held its client: HISTORY row 26).
_client_lock = threading.Lock()


def client_for(config: ProviderConfig) -> openai.OpenAI:
    with _client_lock:
        policy = tuple(settings.SENTINEL["PROVIDER_ALLOWED_HOSTS"]) if config.tenant_url else ()
        return _client(config.base_url, config.api_key, config.timeout, config.connect_timeout, config.tenant_url, policy)


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


OnOpen = Callable[[Callable[[], None]], None]


def stream(config: ProviderConfig, body: dict, on_delta: Callable[[dict], None], on_open: OnOpen | None = None) -> Completion:
    """Stream a completion, calling `on_delta` with each chunk's delta; return the whole of it.
    `on_open` receives a function that closes the stream from another thread (a cancel), once it is open."""
    with _call_span(config, body) as span:
        read = _stream_raw if settings.SENTINEL["PROVIDER_CLIENT"] == "raw" else _stream_sdk
        result = read(config, body, on_delta, on_open)
        _record_result(span, result)
        return result


def _stream_raw(config: ProviderConfig, body: dict, on_delta: Callable[[dict], None], on_open: OnOpen | None = None) -> Completion:
    """The stream read as JSON (SENTINEL_PROVIDER_CLIENT=raw). The SDK's client still sends the
    request (auth, base URL, timeouts, the egress-checked transport, status errors), but its Stream
    builds a pydantic model per chunk and `create` transforms the body: most of a turn's provider
    CPU. The chunks are read here the way the SDK's Stream reads them (`_chunks`)."""
    started = time.monotonic()
    result = Completion(model=config.model)
    calls: dict[Any, dict] = {}  # by index, which the SDK did not require (it may be None)
    finished = False
    # Held until the body is read: the last reference to an SDK client closes its connection pool
    # (its http client's __del__), sockets in use included. The SDK's Stream holds its client; a
    # bare response does not, so a client dropped from the cache (or built by a racing thread and
    # never cached) cut this stream mid-read: EBADF, a 502 provider_unreachable (HISTORY row 26).
    client = client_for(config)
    try:
        response = client.post(
            "/chat/completions",
            body=body,
            cast_to=httpx2.Response,
            stream=True,
            options={"headers": tracing.outgoing_headers(), "security": {"bearer_auth": True}},
        )
        if on_open is not None:
            on_open(response.close)
        try:
            body_bytes = response.iter_bytes()
            for chunk in _chunks(response, body_bytes):
                finished = _take_chunk(chunk, result, calls, on_delta, started) or finished
            _drain(body_bytes)
        finally:
            response.close()
    except ProviderError:
        raise
    except Exception as exc:
        raise classify(exc) from exc
    return _finished(result, calls, finished, started)


def _take_chunk(chunk: Any, result: Completion, calls: dict[Any, dict], on_delta: Callable[[dict], None], started: float) -> bool:
    """Add one chunk's JSON to `result`, pass its delta on; whether it carried the finish_reason."""
    usage = chunk.get("usage")
    if usage or isinstance(usage, dict):  # the SDK's usage object is truthy even when empty
        result.prompt_tokens = usage.get("prompt_tokens")
        result.completion_tokens = usage.get("completion_tokens")
    if chunk.get("model"):
        result.model = chunk["model"]
    choices = chunk.get("choices")
    if not choices:
        return False
    choice = choices[0]
    delta = choice.get("delta")
    out: dict[str, Any] = {}
    if delta and delta.get("content"):
        result.content += delta["content"]
        out["content"] = delta["content"]
    if delta and delta.get("tool_calls"):
        out["tool_calls"] = [_tool_call_delta(call) for call in delta["tool_calls"]]
        _merge_tool_calls(calls, delta["tool_calls"])
    finished = bool(choice.get("finish_reason"))
    if finished:
        result.finish_reason = choice["finish_reason"]
    if out:
        if result.first_token_ms is None:
            result.first_token_ms = int((time.monotonic() - started) * 1000)
        on_delta(out)
    return finished


def _stream_sdk(config: ProviderConfig, body: dict, on_delta: Callable[[dict], None], on_open: OnOpen | None = None) -> Completion:
    """The SDK's own stream, a pydantic model per chunk (SENTINEL_PROVIDER_CLIENT=sdk): the lane
    the raw one is compared with, kept until that one has proven itself."""
    started = time.monotonic()
    result = Completion(model=config.model)
    calls: dict[Any, dict] = {}
    finished = False
    try:
        chunks = client_for(config).chat.completions.create(**body, extra_headers=tracing.outgoing_headers())
        if on_open is not None:
            on_open(chunks.close)
        for chunk in chunks:
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
                _merge_tool_calls(calls, [{"index": tc.index, "id": tc.id, "function": _sdk_function(tc)} for tc in delta.tool_calls])
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
    return _finished(result, calls, finished, started)


def _sdk_function(call: Any) -> dict | None:
    function = call.function
    return {"name": function.name, "arguments": function.arguments} if function else None


def _finished(result: Completion, calls: dict[Any, dict], finished: bool, started: float) -> Completion:
    if not finished:
        # A stream must end with a finish_reason; one that stops short (or was never a stream)
        # is a broken answer, not an empty one.
        raise ProviderError(502, "provider_bad_response", "The model provider's stream ended without finishing.", retryable=True)
    result.tool_calls = [calls[index] for index in sorted(calls)]
    result.latency_ms = int((time.monotonic() - started) * 1000)
    return result


def _chunks(response: httpx2.Response, body_bytes: Iterator[bytes]) -> Iterator[Any]:
    """The JSON of each chunk of a chat completion stream (`body_bytes`, the response's body), read
    as the SDK's Stream reads them: its SSE decoder, `[DONE]` ends the stream, an `error` object
    raises openai.APIError, an Assistants `thread.*` event carries no chunk, and a transport
    failure is the SDK's own APITimeoutError or APIConnectionError."""
    events = SSEDecoder().iter_bytes(body_bytes)
    while True:
        try:
            sse = next(events, None)
        except timeout_exceptions() as err:
            raise openai.APITimeoutError(request=response.request) from err
        except request_exceptions() as err:
            raise openai.APIConnectionError(request=response.request) from err
        if sse is None or sse.data.startswith("[DONE]"):
            return
        data = json.loads(sse.data)
        if sse.event and sse.event.startswith("thread."):
            continue
        if isinstance(data, dict) and data.get("error"):
            error = data["error"]
            message = error.get("message") if isinstance(error, dict) else None
            raise openai.APIError(
                message if message and isinstance(message, str) else "An error occurred during streaming", response.request, body=error
            )
        yield data


# What may follow `[DONE]` before the body's end: a blank line and the chunked encoding's last chunk.
DRAIN_LIMIT = 4096


def _drain(body_bytes: Iterator[bytes]) -> None:
    """Read the body to its end after `[DONE]`, so that its connection goes back to the client's
    pool for the next call: a response closed part-read closes its connection, and every call then
    paid a new TCP connection (and, to a real provider, a TLS handshake; HISTORY row 26). A server
    that sends more than DRAIN_LIMIT bytes after `[DONE]`, or fails meanwhile, has its connection
    closed as before; the answer, complete already, is kept either way."""
    read = 0
    try:
        for piece in body_bytes:
            read += len(piece)
            if read > DRAIN_LIMIT:
                return
    except (httpx2.HTTPError, httpx2.StreamError, OSError):  # the answer is whole; only the connection's reuse is lost
        return


def _tool_call_delta(call: dict) -> dict:
    """A streamed tool-call delta as the SDK's `model_dump(exclude_none=True)` gives it: its
    fields in the model's order, then any others, without the null ones."""
    out = _without_none(call, ("index", "id", "function", "type"))
    if isinstance(out.get("function"), dict):
        out["function"] = _without_none(out["function"], ("arguments", "name"))
    return out


def _without_none(fields: dict, order: tuple[str, ...]) -> dict:
    out = {key: fields[key] for key in order if fields.get(key) is not None}
    out.update((key, value) for key, value in fields.items() if key not in out and value is not None)
    return out


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


def _merge_tool_calls(calls: dict[Any, dict], deltas: list[dict]) -> None:
    for delta in deltas:
        call = calls.setdefault(delta.get("index"), {"id": "", "type": "function", "function": {"name": "", "arguments": ""}})
        if delta.get("id"):
            call["id"] = delta["id"]
        if delta.get("function"):
            call["function"]["name"] += delta["function"].get("name") or ""
            call["function"]["arguments"] += delta["function"].get("arguments") or ""


def classify(exc: Exception) -> ProviderError:
    """Map an SDK or transport exception to the error a client should see.

    A provider's own error text is never passed on: a tenant's URL may lead to any server, and
    echoing what it answered would let a tenant read it through Sentinel. Only its status and a
    short machine-readable code are kept."""
    if isinstance(exc, ProviderError):
        return exc
    denied = _egress_denial(exc)
    if denied is not None:
        return ProviderError(
            403,
            "provider_url_not_allowed",
            f"The agent's provider URL is not allowed by this deployment: {denied}.",
            retryable=False,
            type="permission_error",
        )
    if isinstance(exc, openai.APITimeoutError):
        return ProviderError(504, "provider_timeout", "The model provider did not answer in time.", retryable=True)
    if isinstance(exc, openai.APIConnectionError):
        return ProviderError(502, "provider_unreachable", "The model provider could not be reached.", retryable=True)
    if isinstance(exc, openai.AuthenticationError):
        return ProviderError(401, "provider_auth_failed", "The model provider rejected its API key.", retryable=False, upstream_status=401)
    if isinstance(exc, openai.RateLimitError):
        return ProviderError(
            429,
            "provider_rate_limited",
            "The model provider is rate limiting requests.",
            retryable=True,
            type="rate_limit_error",
            upstream_status=429,
        )
    if isinstance(exc, openai.BadRequestError):
        code = _provider_code(exc)
        return ProviderError(
            400,
            "provider_rejected_request",
            "The model provider rejected the request" + (f" ({code})." if code else "."),
            retryable=False,
            type="invalid_request_error",
            upstream_status=400,
        )
    if isinstance(exc, openai.APIStatusError):
        retryable = exc.status_code >= 500 or exc.status_code in (408, 409)
        return ProviderError(
            502, "provider_error", f"The model provider answered {exc.status_code}.", retryable=retryable, upstream_status=exc.status_code
        )
    if isinstance(exc, (openai.APIResponseValidationError, json.JSONDecodeError, ValueError, KeyError, TypeError, AttributeError)):
        return ProviderError(502, "provider_bad_response", "The model provider returned a malformed response.", retryable=True)
    if isinstance(exc, openai.APIError):
        # An `error` event inside a stream: the SDK raises its base class, with the provider's own
        # words, which are not passed on (above). Without this the turn escaped unclassified.
        return ProviderError(502, "provider_error", "The model provider reported an error in its answer.", retryable=True)
    if isinstance(exc, OSError):
        return ProviderError(502, "provider_unreachable", "The model provider connection failed.", retryable=True)
    raise exc


_SAFE_CODE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _provider_code(exc: openai.APIStatusError) -> str | None:
    """The provider's machine-readable error code (e.g. `context_length_exceeded`), if it sent a
    well-formed one: informative, and too narrow to carry anything read from another server."""
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error", body)
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) and _SAFE_CODE.match(code) else None


def _egress_denial(error: BaseException) -> str | None:
    """The egress policy's reason if it refused this call's connection (the SDK wraps it)."""
    seen = 0
    exc: BaseException | None = error
    while exc is not None and seen < 10:
        if isinstance(exc, egress.EgressDenied):
            return str(exc)
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None
