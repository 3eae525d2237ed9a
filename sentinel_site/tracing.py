"""OpenTelemetry traces, when configured: HTTP request -> turn -> provider call.

Off unless OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set and
OTEL_SDK_DISABLED is not true. Off, every helper here is a cheap no-op and the opentelemetry
packages need not be installed. On, `configure()` (once per process: sentinel_site.asgi for the web,
sentinel_site.celery for the worker) sends spans in batches to an OTLP/HTTP collector; the exporter,
the batch processor and the sampler read the standard OTEL_* variables themselves.

Spans are made by hand, not by instrumentation packages: one SERVER span per HTTP request
(sentinel_site.middleware), one CONSUMER span per turn attempt (agents.tasks), one CLIENT span per
provider call (agents.providers). A turn carries its request span's traceparent in its row, so an
attempt the Supervisor requeues later still joins the request's trace.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, Literal

from django.core.exceptions import ImproperlyConfigured

Kind = Literal["internal", "server", "client", "producer", "consumer"]

_tracer: Any = None  # an opentelemetry Tracer while tracing is on
_provider: Any = None  # its TracerProvider, kept to flush and stop it


def wanted(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment asks for traces: an OTLP endpoint is set and the SDK is not disabled."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return bool(environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def is_on() -> bool:
    return _tracer is not None


def configure(service_name: str) -> None:
    """Turn tracing on for this process if the environment asks for it; call once at start-up.

    `service_name` is the default resource service.name; OTEL_SERVICE_NAME (or a service.name in
    OTEL_RESOURCE_ATTRIBUTES) wins over it.
    """
    global _tracer, _provider
    if _tracer is not None or not wanted():
        return
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as error:
        raise ImproperlyConfigured(
            f"OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry is not installed ({error}): "
            "pip install -r requirements-otel.txt, or unset the endpoint"
        ) from error
    from_env = OTELResourceDetector().detect().attributes.get(SERVICE_NAME)
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: from_env or service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _provider = provider
    _tracer = provider.get_tracer("sentinel")


def shutdown() -> None:
    """Export the spans still buffered and stop tracing; call as the process stops."""
    global _tracer, _provider
    provider, _tracer, _provider = _provider, None, None
    if provider is not None:
        provider.shutdown()


class Span:
    """A span as our code sees it: the same calls whether tracing is on or off."""

    __slots__ = ("_span", "failed")

    def __init__(self, span: Any = None) -> None:
        self._span = span
        self.failed = False

    @property
    def trace_id(self) -> str:
        """The 32-hex-digit trace id, or "" when tracing is off."""
        if self._span is None:
            return ""
        from opentelemetry.trace import format_trace_id

        return format_trace_id(self._span.get_span_context().trace_id)

    def rename(self, name: str) -> None:
        if self._span is not None:
            self._span.update_name(name)

    def set_attribute(self, key: str, value: Any) -> None:
        """Set one attribute; None is skipped. Never pass prompts, completions, keys or secrets."""
        if self._span is not None and value is not None:
            self._span.set_attribute(key, value)

    def fail(self, error_type: str, error: BaseException | None = None) -> None:
        """Mark the span failed with a low-cardinality `error.type`, and the exception if given
        (only for unexpected errors: an exception's message may quote what it was working on)."""
        if self._span is None:
            return
        from opentelemetry.trace import Status, StatusCode

        self.failed = True

        self._span.set_attribute("error.type", error_type)
        if error is not None:
            self._span.record_exception(error)
        self._span.set_status(Status(StatusCode.ERROR, error_type))


_OFF = nullcontext(Span())


def span(
    name: str,
    kind: Kind = "internal",
    attributes: Mapping[str, Any] | None = None,
    parent_traceparent: str | None = None,
) -> AbstractContextManager[Span]:
    """A span around a block, current inside it. `parent_traceparent` continues a W3C traceparent
    (an empty or malformed one starts a new trace); None continues the current span, if any.
    An exception leaving the block marks the span failed unless the block already did."""
    if _tracer is None:
        return _OFF
    return _recording(name, kind, attributes, parent_traceparent)


@contextmanager
def _recording(name: str, kind: Kind, attributes: Mapping[str, Any] | None, parent_traceparent: str | None) -> Iterator[Span]:
    from opentelemetry.trace import SpanKind

    parent = None if parent_traceparent is None else _context_of(parent_traceparent)
    values = {key: value for key, value in (attributes or {}).items() if value is not None}
    with _tracer.start_as_current_span(
        name,
        context=parent,
        kind=SpanKind[kind.upper()],
        attributes=values,
        record_exception=False,
        set_status_on_exception=False,
    ) as otel_span:
        handle = Span(otel_span)
        try:
            yield handle
        except Exception as error:
            if not handle.failed:
                handle.fail(type(error).__qualname__, error)
            raise


def _context_of(traceparent: str) -> Any:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator().extract({"traceparent": traceparent})


def current_traceparent() -> str:
    """The W3C traceparent of the current span ("" when tracing is off or no span is current)."""
    if _tracer is None:
        return ""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier.get("traceparent", "")


def outgoing_headers() -> dict[str, str]:
    """Headers that carry the current span to a server we call (traceparent, and whatever else
    OTEL_PROPAGATORS names); {} when tracing is off."""
    if _tracer is None:
        return {}
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier
