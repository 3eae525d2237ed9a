"""A webhook receiver: a real HTTP server on loopback that records what it gets and answers as scripted."""

from __future__ import annotations

import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest

from tests.conftest import wait_for
from tests.e2e.conftest import worker_is_idle


class Receiver:
    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.statuses: deque[int] = deque()
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver.lock:
                    receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                    status = receiver.statuses.popleft() if receiver.statuses else 200
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def of_type(self, kind: str) -> list[tuple[dict[str, str], bytes]]:
        import json

        with self.lock:
            return [(h, b) for h, b in self.received if json.loads(b)["type"] == kind]


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.server.shutdown()


@pytest.fixture
def live(db, live_stack):
    yield live_stack
    wait_for(worker_is_idle, timeout=60, message="the worker to go idle")


@pytest.fixture
def client(live, alice):
    return openai.OpenAI(base_url=live.api, api_key=alice.key, max_retries=0, timeout=30)
