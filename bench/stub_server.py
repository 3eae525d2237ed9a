"""An OpenAI-compatible stub model server for benchmarks: asyncio, so a thousand open requests cost
nothing, with a configurable latency and streaming pace.

    python -m bench.stub_server --port 9100

POST /v1/chat/completions answers after `latency_ms`; with `stream: true` it sends `chunks` chunks
`chunk_ms` apart. POST /control with any of those keys changes them for the requests that follow,
so one server serves every benchmark in a run. Every answer is a new text (numbered), as a model's
would be: a constant one would hit whatever keeps a text's embedding (memory/embeddings.py
`_recent`) on every turn.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from typing import Any

SETTINGS: dict[str, float] = {"latency_ms": 0.0, "chunks": 64, "chunk_ms": 20.0}
ANSWER = "Sentinel benchmark answer"
_NUMBERS = itertools.count(1)  # the stub's answers so far: each answer says its number
MODELS = json.dumps({"object": "list", "data": [{"id": "stub-model", "object": "model", "created": 0, "owned_by": "bench"}]}).encode()


async def _body(receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def _send_json(send, status: int, payload: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def _usage(request: dict) -> dict[str, int]:
    prompt = sum(len(str(m.get("content") or "").split()) for m in request.get("messages", []))
    return {"prompt_tokens": prompt, "completion_tokens": 4, "total_tokens": prompt + 4}


async def _complete(send, request: dict) -> None:
    response = {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.get("model", "stub-model"),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": f"{ANSWER} {next(_NUMBERS)}."}, "finish_reason": "stop"}],
        "usage": _usage(request),
    }
    await _send_json(send, 200, json.dumps(response).encode())


async def _stream(send, request: dict) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
    model = request.get("model", "stub-model")
    chunks = int(SETTINGS["chunks"])

    def event(delta: dict, finish: str | None = None, usage: dict | None = None) -> bytes:
        chunk: dict[str, Any] = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        if usage:
            chunk["usage"] = usage
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"

    await send({"type": "http.response.body", "body": event({"role": "assistant", "content": ""}), "more_body": True})
    number = next(_NUMBERS)
    for i in range(chunks):
        if i:
            await asyncio.sleep(SETTINGS["chunk_ms"] / 1000)
        await send({"type": "http.response.body", "body": event({"content": f" w{i}" if i else f"#{number} w0"}), "more_body": True})
    usage = {**_usage(request), "completion_tokens": chunks}
    usage["total_tokens"] = usage["prompt_tokens"] + chunks
    tail = event({}, "stop", usage) + b"data: [DONE]\n\n"
    await send({"type": "http.response.body", "body": tail})


async def app(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    path, method = scope["path"].rstrip("/"), scope["method"]
    if method == "GET" and path.endswith("/models"):
        await _send_json(send, 200, MODELS)
        return
    if method != "POST":
        await _send_json(send, 404, b'{"error": {"message": "not found", "type": "invalid_request_error"}}')
        return
    body = await _body(receive)
    if path == "/control":
        SETTINGS.update({k: float(v) for k, v in json.loads(body or b"{}").items() if k in SETTINGS})
        await _send_json(send, 200, json.dumps(SETTINGS).encode())
        return
    request = json.loads(body or b"{}")
    if SETTINGS["latency_ms"]:
        await asyncio.sleep(SETTINGS["latency_ms"] / 1000)
    if request.get("stream"):
        await _stream(send, request)
    else:
        await _complete(send, request)


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9100)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False, backlog=4096, lifespan="off")


if __name__ == "__main__":
    main()
