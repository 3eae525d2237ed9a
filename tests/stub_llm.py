"""A scripted OpenAI-compatible HTTP server for tests (and benchmarks).

Tests queue `Reply`s; each POST /v1/chat/completions takes the next one (or, with none queued, echoes
the last user message). A reply can answer with text or tool calls, stream at a pace, fail with a
status, hang, or send a malformed body. Every request's body and headers are recorded for assertions.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    content: str = "Hello from the stub."
    tool_calls: list[dict] | None = None
    status: int = 200
    error_body: dict | None = None
    delay: float = 0.0  # before the first byte
    chunk_delay: float = 0.0  # between streamed chunks
    hang: float = 0.0  # sleep this long and then close without answering
    malformed: bool = False  # a 200 whose body is not valid JSON (or, streaming, whose chunks are not)
    cut_after: int | None = None  # streaming: drop the connection after this many content chunks
    usage: bool = True
    chunks: int | None = None  # split content into this many chunks (default: word by word)
    report_usage: tuple[int, int] | None = None  # (prompt, completion) tokens to report instead of counting words


@dataclass
class StubState:
    replies: deque = field(default_factory=deque)
    requests: list[dict] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)  # of each request, names lower-cased
    lock: threading.Lock = field(default_factory=threading.Lock)
    # (marker, action): a request whose last user message contains marker is answered by action(body)
    rules: list[tuple[str, Callable[[dict], Reply]]] = field(default_factory=list)


class StubLLM:
    """Runs the server on a free loopback port in a daemon thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.state = StubState()
        handler = type("Handler", (_Handler,), {"state": self.state})
        self.server = ThreadingHTTPServer((host, port), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> StubLLM:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def script(self, *replies: Reply) -> None:
        with self.state.lock:
            self.state.replies.extend(replies)

    def when(self, marker: str, action: Callable[[dict], Reply]) -> None:
        """Answer every request whose last user message contains marker with action(body), which
        runs on arrival (so it can, say, kill the worker that asked) and returns the reply."""
        with self.state.lock:
            self.state.rules.append((marker, action))

    def reset(self) -> None:
        with self.state.lock:
            self.state.replies.clear()
            self.state.requests.clear()
            self.state.headers.clear()
            self.state.rules.clear()

    @property
    def requests(self) -> list[dict]:
        with self.state.lock:
            return list(self.state.requests)

    @property
    def request_headers(self) -> list[dict[str, str]]:
        with self.state.lock:
            return list(self.state.headers)


def _split(text: str, pieces: int | None) -> list[str]:
    if pieces is None:
        words = text.split(" ")
        return [w if i == 0 else " " + w for i, w in enumerate(words)] if text else []
    size = max(1, -(-len(text) // pieces))
    return [text[i : i + size] for i in range(0, len(text), size)]


class _Handler(BaseHTTPRequestHandler):
    state: StubState
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def _json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            self._json(200, {"object": "list", "data": [{"id": "stub-model", "object": "model", "created": 0, "owned_by": "stub"}]})
        else:
            self._json(404, {"error": {"message": "not found", "type": "invalid_request_error"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        last_user = next((m.get("content") for m in reversed(body.get("messages", [])) if m.get("role") == "user"), "") or ""
        with self.state.lock:
            self.state.requests.append(body)
            self.state.headers.append({name.lower(): value for name, value in self.headers.items()})
            action = next((act for marker, act in self.state.rules if marker in str(last_user)), None)
            reply = None if action else self.state.replies.popleft() if self.state.replies else None
        if action is not None:
            reply = action(body)
        if reply is None:
            reply = Reply(content=f"echo: {last_user}")
        if reply.hang:
            time.sleep(reply.hang)
            self.close_connection = True
            return
        if reply.delay:
            time.sleep(reply.delay)
        if reply.status != 200:
            error = reply.error_body or {"error": {"message": f"stub error {reply.status}", "type": "stub_error", "code": None}}
            self._json(reply.status, error)
            return
        if reply.malformed and body.get("stream"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Content-Length", "22")
            self.end_headers()
            self.wfile.write(b"data: {not json at all\n\n"[:22])
            return
        if reply.malformed:
            data = b"{this is not json"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        if body.get("stream"):
            self._stream(body, reply)
        else:
            self._complete(body, reply)

    def _usage(self, body: dict, reply: Reply) -> dict:
        if reply.report_usage:
            prompt, completion = reply.report_usage
            return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
        prompt = sum(len(str(m.get("content") or "").split()) for m in body.get("messages", []))
        completion = len(reply.content.split()) + (len(reply.tool_calls or []) * 5)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def _complete(self, body: dict, reply: Reply) -> None:
        message: dict[str, Any] = {"role": "assistant", "content": reply.content if not reply.tool_calls else None}
        if reply.tool_calls:
            message["tool_calls"] = reply.tool_calls
        response = {
            "id": "chatcmpl-stub",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "stub-model"),
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if reply.tool_calls else "stop"}],
        }
        if reply.usage:
            response["usage"] = self._usage(body, reply)
        self._json(200, response)

    def _stream(self, body: dict, reply: Reply) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        model = body.get("model", "stub-model")

        def send(payload: Any) -> None:
            data = f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n".encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def chunk(delta: dict, finish: str | None = None) -> dict:
            return {
                "id": "chatcmpl-stub",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }

        send(chunk({"role": "assistant", "content": ""}))
        if reply.tool_calls:
            for index, call in enumerate(reply.tool_calls):
                send(
                    chunk(
                        {
                            "tool_calls": [
                                {
                                    "index": index,
                                    "id": call["id"],
                                    "type": "function",
                                    "function": {"name": call["function"]["name"], "arguments": ""},
                                }
                            ]
                        }
                    )
                )
                send(chunk({"tool_calls": [{"index": index, "function": {"arguments": call["function"]["arguments"]}}]}))
        else:
            for count, piece in enumerate(_split(reply.content, reply.chunks)):
                if reply.cut_after is not None and count >= reply.cut_after:
                    self.close_connection = True
                    return
                if reply.chunk_delay:
                    time.sleep(reply.chunk_delay)
                send(chunk({"content": piece}))
        send(chunk({}, "tool_calls" if reply.tool_calls else "stop"))
        if reply.usage and (body.get("stream_options") or {}).get("include_usage"):
            send(
                {
                    "id": "chatcmpl-stub",
                    "object": "chat.completion.chunk",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [],
                    "usage": self._usage(body, reply),
                }
            )
        send("[DONE]")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


if __name__ == "__main__":  # python -m tests.stub_llm [port]: a stub for manual runs and benchmarks
    import sys

    stub = StubLLM(port=int(sys.argv[1]) if len(sys.argv) > 1 else 8002).start()
    print(f"stub LLM at {stub.base_url}", flush=True)
    threading.Event().wait()
