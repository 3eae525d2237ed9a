"""How the adapter reads a provider's stream: server-sent events sent byte for byte by a real
HTTP server on loopback, read through the same SDK client the turns use, on both lanes
(SENTINEL_PROVIDER_CLIENT: raw, the chunks read as JSON; sdk, the SDK's own Stream)."""

from __future__ import annotations

import gc
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from agents import providers


class _RawSSE(BaseHTTPRequestHandler):
    """Answers every POST with the scripted byte strings, each as its own HTTP chunk; `None` in
    the script drops the connection there, without the chunked body's end; a number pauses that
    many seconds (so the client must read the socket again)."""

    protocol_version = "HTTP/1.1"
    script: list[bytes | float | None] = []
    seen: list[tuple[dict[str, str], dict]] = []
    ports: list[int] = []  # the client's port of each request: one per TCP connection

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append(({name.lower(): value for name, value in self.headers.items()}, body))
        self.ports.append(self.client_address[1])
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for piece in self.script:
            if piece is None:
                self.close_connection = True
                return
            if isinstance(piece, float):
                time.sleep(piece)
                continue
            self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that stops reading (after [DONE], an error event) breaks the pipe: expected


@pytest.fixture(autouse=True, params=["raw", "sdk"])
def lane(request, settings) -> str:
    settings.SENTINEL = {**settings.SENTINEL, "PROVIDER_CLIENT": request.param}
    return request.param


@pytest.fixture(scope="module")
def sse_server() -> Iterator[ThreadingHTTPServer]:
    server = _Server(("127.0.0.1", 0), _RawSSE)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def answer(sse_server: ThreadingHTTPServer, *script: bytes | float | None) -> tuple[providers.ProviderConfig, dict]:
    _RawSSE.script, _RawSSE.seen, _RawSSE.ports = list(script), [], []
    host, port = sse_server.server_address[:2]
    config = providers.ProviderConfig(f"http://{host}:{port}/v1", "test-key", "stub-model", 5.0, 2.0)
    return config, providers.request_body(config, [{"role": "user", "content": "hi"}], {"temperature": 0.2}, stream=True)


def event(payload: Any) -> bytes:
    return b"data: " + (payload if isinstance(payload, bytes) else json.dumps(payload).encode()) + b"\n\n"


def chunk(delta: dict, finish: str | None = None, **extra: Any) -> bytes:
    return event(
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "model": "served-model",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }
    )


def stream(config: providers.ProviderConfig, body: dict) -> tuple[providers.Completion, list[dict]]:
    deltas: list[dict] = []
    return providers.stream(config, body, deltas.append), deltas


def test_text_chunks_reach_on_delta_and_the_usage_only_final_chunk_is_counted(sse_server):
    config, body = answer(
        sse_server,
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Hello"}),
        chunk({"content": " there"}),
        chunk({}, "stop"),
        event(
            {"id": "c", "model": "served-model", "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}}
        ),
        event(b"[DONE]"),
    )
    result, deltas = stream(config, body)
    assert deltas == [{"content": "Hello"}, {"content": " there"}], "an empty first delta (role only) is not a token"
    assert (result.content, result.finish_reason, result.model) == ("Hello there", "stop", "served-model")
    assert (result.prompt_tokens, result.completion_tokens) == (7, 2)
    assert result.first_token_ms is not None and result.tool_calls == []


def test_the_request_carries_the_key_and_the_body_as_built(sse_server):
    config, body = answer(sse_server, chunk({"content": "x"}, "stop"), event(b"[DONE]"))
    stream(config, body)
    headers, sent = _RawSSE.seen[0]
    assert headers["authorization"] == "Bearer test-key" and headers["content-type"] == "application/json"
    assert sent == body and sent["stream_options"] == {"include_usage": True}


def test_tool_call_deltas_across_chunks_are_passed_on_and_merged_by_index(sse_server):
    config, body = answer(
        sse_server,
        chunk({"tool_calls": [{"index": 1, "id": "call_b", "type": "function", "function": {"name": "second", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "id": "call_a", "type": "function", "function": {"name": "first", "arguments": '{"q"'}}]}),
        chunk(
            {"tool_calls": [{"index": 0, "function": {"arguments": ': "x"}', "name": None}}, {"index": 1, "function": {"arguments": "{}"}}]}
        ),
        chunk({}, "tool_calls"),
        event(b"[DONE]"),
    )
    result, deltas = stream(config, body)
    assert deltas[2] == {
        "tool_calls": [{"index": 0, "function": {"arguments": ': "x"}'}}, {"index": 1, "function": {"arguments": "{}"}}]
    }, "a delta is passed on without its null fields, as the SDK's model_dump(exclude_none=True) gave it"
    assert json.dumps(deltas[0]) == json.dumps(
        {"tool_calls": [{"index": 1, "id": "call_b", "function": {"arguments": "", "name": "second"}, "type": "function"}]}
    ), "the fields keep the SDK model's order"
    assert result.finish_reason == "tool_calls" and result.content == ""
    assert result.tool_calls == [
        {"id": "call_a", "type": "function", "function": {"name": "first", "arguments": '{"q": "x"}'}},
        {"id": "call_b", "type": "function", "function": {"name": "second", "arguments": "{}"}},
    ]


def test_an_error_event_mid_stream_is_a_provider_error_after_the_deltas_before_it(sse_server):
    config, body = answer(
        sse_server, chunk({"content": "partial"}), event({"error": {"message": "overloaded", "type": "server_error", "code": "overloaded"}})
    )
    deltas: list[dict] = []
    with pytest.raises(providers.ProviderError) as raised:
        providers.stream(config, body, deltas.append)
    assert (raised.value.status, raised.value.code, raised.value.retryable) == (502, "provider_error", True)
    assert "overloaded" not in raised.value.message, "the provider's own words are not passed on"
    assert deltas == [{"content": "partial"}]


def test_a_stream_that_ends_without_a_finish_reason_is_a_bad_response(sse_server):
    config, body = answer(sse_server, chunk({"content": "half"}), event(b"[DONE]"))
    with pytest.raises(providers.ProviderError) as raised:
        stream(config, body)
    assert (raised.value.status, raised.value.code, raised.value.retryable) == (502, "provider_bad_response", True)


def test_a_last_event_without_its_blank_line_is_never_read(sse_server):
    config, body = answer(sse_server, chunk({"content": "half"}), chunk({}, "stop")[:-1])
    with pytest.raises(providers.ProviderError) as raised:
        stream(config, body)
    assert raised.value.code == "provider_bad_response" and "without finishing" in raised.value.message


def test_a_connection_cut_mid_stream_is_an_unreachable_provider(sse_server):
    config, body = answer(sse_server, chunk({"content": "half"}), b'data: {"choi', None)
    deltas: list[dict] = []
    with pytest.raises(providers.ProviderError) as raised:
        providers.stream(config, body, deltas.append)
    assert (raised.value.status, raised.value.code) == (502, "provider_unreachable")
    assert deltas == [{"content": "half"}]


def test_a_data_line_that_is_not_json_is_a_malformed_response(sse_server):
    config, body = answer(sse_server, chunk({"content": "ok"}), event(b"{not json"), chunk({}, "stop"))
    with pytest.raises(providers.ProviderError) as raised:
        stream(config, body)
    assert (raised.value.status, raised.value.code) == (502, "provider_bad_response")
    assert "malformed" in raised.value.message


def test_a_chunk_of_the_wrong_shape_is_a_malformed_response(sse_server):
    config, body = answer(sse_server, event({"choices": [{"delta": {"content": 5}}]}))
    with pytest.raises(providers.ProviderError) as raised:
        stream(config, body)
    assert raised.value.code == "provider_bad_response"


def test_done_ends_the_stream_and_what_follows_is_not_read(sse_server):
    config, body = answer(sse_server, chunk({"content": "x"}, "stop"), event(b"[DONE]"), chunk({"content": "never"}))
    result, deltas = stream(config, body)
    assert result.content == "x" and deltas == [{"content": "x"}]


def test_crlf_line_ends_split_across_reads_comments_and_assistants_events_are_read_as_the_sdk_reads_them(sse_server):
    first = chunk({"content": "a"}).replace(b"\n\n", b"\r")
    config, body = answer(
        sse_server,
        first,
        b"\n\r\n",
        b": keep-alive\n\n",
        b"event: thread.message.delta\n" + chunk({"content": "not a chat chunk"}),
        b'data: {"model": "m2", "choices": [{"delta": {"content": "b"},\ndata: "finish_reason": "stop"}]}\n\n',
    )
    result, deltas = stream(config, body)
    assert deltas == [{"content": "a"}, {"content": "b"}] and result.model == "m2" and result.finish_reason == "stop"


def test_a_stream_outlives_its_client_leaving_the_cache(sse_server):
    # The last reference to an SDK client closes its connection pool, the socket being read
    # included: a client evicted from the cache (or built by a racing thread and never cached)
    # must live until the stream it sent has been read (the chaos test's 502, HISTORY row 26).
    config, body = answer(sse_server, chunk({"content": "a"}), 0.05, chunk({"content": "b"}), 0.05, chunk({}, "stop"), event(b"[DONE]"))
    deltas: list[dict] = []

    def drop_the_client(delta: dict) -> None:
        deltas.append(delta)
        providers._client.cache_clear()
        gc.collect()

    result = providers.stream(config, body, drop_the_client)
    assert result.content == "ab" and deltas == [{"content": "a"}, {"content": "b"}]


def test_threads_that_start_together_share_one_client_per_endpoint(sse_server):
    config, _ = answer(sse_server)
    providers._client.cache_clear()
    start, clients = threading.Barrier(8), []

    def first_call() -> None:
        start.wait()
        clients.append(providers.client_for(config))

    threads = [threading.Thread(target=first_call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(client) for client in clients}) == 1, "one connection pool per endpoint, not one per thread that raced to build it"


def calls_through(config: providers.ProviderConfig, body: dict, times: int) -> list[str]:
    return [stream(config, body)[0].content for _ in range(times)]


def test_a_stream_read_to_done_leaves_its_connection_to_the_next_call(sse_server, lane):
    if lane == "sdk":
        pytest.skip("the SDK's Stream closes a response read to [DONE] with its connection: the old lane's cost (HISTORY row 26)")
    config, body = answer(sse_server, chunk({"content": "x"}, "stop"), event(b"[DONE]"))
    assert calls_through(config, body, 3) == ["x", "x", "x"]
    assert len(set(_RawSSE.ports)) == 1, "one TCP connection for three calls, not one each"


def test_a_server_that_goes_on_after_done_has_its_connection_closed_and_its_answer_kept(sse_server, lane):
    tail = b": " + b"z" * providers.DRAIN_LIMIT + b"\n\n"
    config, body = answer(sse_server, chunk({"content": "x"}, "stop"), event(b"[DONE]"), tail, tail)
    assert calls_through(config, body, 2) == ["x", "x"]
    assert len(set(_RawSSE.ports)) == 2, "past the drain's bound the connection is closed, not read to its end"


def test_a_connection_dropped_after_done_keeps_the_answer_and_the_next_call_opens_another(sse_server, lane):
    config, body = answer(sse_server, chunk({"content": "x"}, "stop"), event(b"[DONE]"), 0.05, None)
    assert calls_through(config, body, 2) == ["x", "x"]
    assert len(set(_RawSSE.ports)) == 2
