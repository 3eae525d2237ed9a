"""Graceful shutdown: SIGTERM lets in-flight work finish (a worker's turns are interrupted and resumed
by the next worker instead: test_turn_control.py); nothing is lost."""

import signal
import subprocess
import threading
import time

import httpx
import pytest

from sentinel_site.stack import BASE_DIR, web_command
from tests.conftest import _answers, free_port, wait_for
from tests.stub_llm import Reply

pytestmark = pytest.mark.django_db(transaction=True)


# A worker stopped with SIGTERM interrupts its turns and the next worker resumes them:
# tests/e2e/test_turn_control.py::test_a_worker_stopped_with_sigterm_interrupts_its_turn_and_the_next_worker_resumes_it


def test_a_web_process_stopped_with_sigterm_finishes_its_open_stream(live_stack, alice, stub_llm, tmp_path):
    port = free_port()
    web = subprocess.Popen(
        web_command("127.0.0.1", port), cwd=BASE_DIR, env=live_stack.env, stdout=(tmp_path / "web.log").open("wb"), stderr=subprocess.STDOUT
    )
    try:
        wait_for(lambda: _answers(f"http://127.0.0.1:{port}/health/live"), timeout=30, message="a second web process")
        stub_llm.script(Reply(content=" ".join(f"w{i}" for i in range(20)), chunk_delay=0.1))
        chunks: list[str] = []
        body = {"model": "helper", "stream": True, "messages": [{"role": "user", "content": "count"}]}

        def read():
            with (
                httpx.Client(timeout=30) as h,
                h.stream(
                    "POST", f"http://127.0.0.1:{port}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {alice.key}"}
                ) as response,
            ):
                chunks.extend(line for line in response.iter_lines() if line)

        reader = threading.Thread(target=read)
        reader.start()
        wait_for(lambda: len(chunks) >= 3, timeout=15, message="the stream to begin")
        web.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert not _answers(f"http://127.0.0.1:{port}/health/live"), "a stopping server takes no new requests"
        reader.join(30)
        assert chunks[-1] == "data: [DONE]", "the open stream ran to its end"
        # uvicorn re-raises the signal once its graceful shutdown is done, so -SIGTERM is a clean exit too
        assert web.wait(30) in (0, -signal.SIGTERM)
    finally:
        if web.poll() is None:
            web.kill()
