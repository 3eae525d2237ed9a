"""Traces: with an OTLP endpoint configured, a chat completion is one trace from the caller's
traceparent through the web request and the worker's turn to the provider call.

A collector of our own (OTLP/HTTP, protobuf) runs in the test process; a web process and a worker
with the endpoint set run beside the live stack, whose worker stops taking turns meanwhile.
"""

from __future__ import annotations

import contextlib
import gzip
import signal
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest, ExportTraceServiceResponse
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan

from agents.models import Turn
from sentinel_site.celery import app as celery_app
from sentinel_site.stack import BASE_DIR, web_command
from tests.conftest import _answers, free_port, start_worker, wait_for
from tests.stub_llm import Reply

pytestmark = pytest.mark.django_db(transaction=True)

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@dataclass
class ReceivedSpan:
    service: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    failed: bool


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    return getattr(value, kind) if kind else None


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


class OtlpReceiver:
    """Accepts OTLP/HTTP protobuf exports on POST /v1/traces and keeps their spans."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                receiver.keep(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def endpoint(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def keep(self, request: ExportTraceServiceRequest) -> None:
        received = []
        for resource_spans in request.resource_spans:
            service = _attributes(resource_spans.resource.attributes).get("service.name", "")
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        ReceivedSpan(
                            service=service,
                            name=span.name,
                            kind=span.kind,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            attributes=_attributes(span.attributes),
                            failed=span.status.code == span.status.STATUS_CODE_ERROR,
                        )
                    )
        with self.lock:
            self.spans.extend(received)

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        with self.lock:
            return [span for span in self.spans if span.trace_id == trace_id]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def collector() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    yield receiver
    receiver.stop()


@contextlib.contextmanager
def traced_stack(env: dict[str, str], folder: Path) -> Iterator[str]:
    """A web process and a worker with `env`; the live worker takes no turns until they have stopped,
    so the turn is run by the traced worker. Yields the web process's base URL."""
    # One live worker runs beside the tests: its answer is the one to wait for.
    paused = celery_app.control.cancel_consumer("turns", reply=True, timeout=5, limit=1)
    assert paused, "the live worker answered the request to stop taking turns"
    processes: list[subprocess.Popen] = []
    try:
        port = free_port()
        web_log = folder / "web.log"
        processes.append(
            subprocess.Popen(web_command("127.0.0.1", port), cwd=BASE_DIR, env=env, stdout=web_log.open("wb"), stderr=subprocess.STDOUT)
        )
        processes.append(start_worker(env, folder / "worker.log", concurrency=2, queues="turns"))
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: _answers(f"{base}/health/live"), timeout=60, message="the traced web process")
        yield base
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        celery_app.control.add_consumer("turns", reply=True, timeout=5, limit=1)


def only(spans: list[ReceivedSpan], kind: int, name: str | None = None) -> ReceivedSpan:
    found = [span for span in spans if span.kind == kind and (name is None or span.name == name)]
    assert len(found) == 1, f"one {name or kind} span in the trace, got {[(s.service, s.name) for s in spans]}"
    return found[0]


def test_a_chat_completion_is_one_trace_from_the_callers_span_to_each_provider_call(live_stack, alice, stub_llm, collector, tmp_path):
    env = {
        **live_stack.env,
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "60000",
        "SENTINEL_PROVIDER_RETRIES": "1",
        "SENTINEL_PROVIDER_RETRY_BASE_SECONDS": "0",
    }
    for name in ("OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_SDK_DISABLED", "OTEL_TRACES_SAMPLER"):
        env.pop(name, None)
    stub_llm.script(Reply(status=503), Reply(content="a traced answer", report_usage=(21, 4)))
    chat = {"model": "helper", "messages": [{"role": "user", "content": "secret plans"}]}
    with (
        traced_stack(env, tmp_path) as base,
        httpx.Client(base_url=base, headers={"Authorization": f"Bearer {alice.key}"}, timeout=30) as h,
    ):
        response = h.post("/v1/chat/completions", json=chat, headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"})
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"] == "a traced answer"
        untraced_caller = h.post("/v1/chat/completions", json=chat)
        assert untraced_caller.status_code == 200, untraced_caller.text
    # The schedule delay is a minute: every span below was exported as its process shut down.
    spans = collector.trace(CALLER_TRACE)

    server = only(spans, ProtoSpan.SPAN_KIND_SERVER)
    assert server.service == "sentinel-web"
    assert server.name == "POST /v1/chat/completions"
    assert server.parent_span_id == CALLER_SPAN, "the request span continues the caller's"
    assert server.attributes["http.request.method"] == "POST"
    assert server.attributes["url.path"] == "/v1/chat/completions"
    assert server.attributes["http.route"] == "/v1/chat/completions"
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["sentinel.tenant.id"] == str(alice.tenant.id)

    run = only(spans, ProtoSpan.SPAN_KIND_CONSUMER, "turn.run")
    assert run.service == "sentinel-worker"
    assert run.parent_span_id == server.span_id, "the turn's attempt is a child of the request, through the Turn row"
    assert run.attributes["sentinel.turn.id"] == response.headers["Sentinel-Turn-Id"]
    assert run.attributes["sentinel.turn.attempt"] == 1
    assert run.attributes["sentinel.tenant.id"] == str(alice.tenant.id)
    assert run.attributes["sentinel.agent.name"] == "helper"
    assert run.attributes["sentinel.turn.status"] == "succeeded"
    assert not run.failed and not server.failed

    failed_call, call = sorted((s for s in spans if s.kind == ProtoSpan.SPAN_KIND_CLIENT), key=lambda s: not s.failed)
    assert failed_call.failed and failed_call.attributes["error.type"] == "provider_error", "the 503 is its own failed span"
    assert not call.failed and "error.type" not in call.attributes
    for each in (failed_call, call):
        assert each.service == "sentinel-worker"
        assert each.name == "chat stub-model"
        assert each.parent_span_id == run.span_id, "each provider call is a child of the turn's attempt"
        assert each.attributes["gen_ai.operation.name"] == "chat"
        assert each.attributes["gen_ai.provider.name"] == "openai"
        assert each.attributes["gen_ai.request.model"] == "stub-model"
        assert each.attributes["server.address"] == "127.0.0.1"
    assert call.attributes["gen_ai.usage.input_tokens"] == 21
    assert call.attributes["gen_ai.usage.output_tokens"] == 4
    for span in spans:
        assert not any("secret plans" in str(value) or "a traced answer" in str(value) for value in span.attributes.values()), (
            f"{span.name} carries no prompt or completion"
        )
    sent = [headers.get("traceparent", "").split("-")[1:3] for headers in stub_llm.request_headers[:2]]
    assert sent == [[CALLER_TRACE, failed_call.span_id], [CALLER_TRACE, call.span_id]], "each provider call carried its span's traceparent"

    # Without a caller's traceparent the request starts a trace, and its logs' trace id is that trace's.
    turn = Turn.objects.get(id=untraced_caller.headers["Sentinel-Turn-Id"])
    own = collector.trace(turn.trace_id)
    own_server = only(own, ProtoSpan.SPAN_KIND_SERVER)
    assert turn.traceparent.split("-")[1:3] == [turn.trace_id, own_server.span_id]
    assert only(own, ProtoSpan.SPAN_KIND_CONSUMER).parent_span_id == own_server.span_id
