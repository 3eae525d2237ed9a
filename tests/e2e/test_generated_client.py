"""A typed client generated from the OpenAPI document the live stack serves, and called.

openapi-python-client (from PyPI) generates a package from /api/schema/ into a temporary folder
once per module; the tests import it and call the API through its typed models. A document the
generator cannot read (it drops an endpoint or a model with a warning) fails the first test, so
the schema stays good enough for a generated client.
"""

import importlib
import subprocess
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from agents.models import Turn, TurnStatus
from tests.conftest import wait_for
from tests.stub_llm import Reply

pytestmark = pytest.mark.django_db(transaction=True)

PACKAGE = "sentinel_generated_client"
GENERATOR = Path(sys.executable).with_name("openapi-python-client")


@pytest.fixture(scope="module")
def generated(live_stack, tmp_path_factory):
    folder = tmp_path_factory.mktemp("generated")
    schema = httpx.get(f"{live_stack.base_url}/api/schema/", params={"format": "json"}, timeout=30)
    assert schema.status_code == 200
    (folder / "schema.json").write_bytes(schema.content)
    (folder / "config.yaml").write_text("post_hooks: []\n")  # no formatter run: the code is imported, not read
    done = subprocess.run(
        [GENERATOR, "generate", "--path", "schema.json", "--meta", "none", "--output-path", PACKAGE, "--config", "config.yaml"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
    )
    sys.path.insert(0, str(folder))
    try:
        yield SimpleNamespace(
            output=done.stdout + done.stderr,
            returncode=done.returncode,
            load=lambda name: importlib.import_module(f"{PACKAGE}.{name}"),
        )
    finally:
        sys.path.remove(str(folder))
        for name in [name for name in sys.modules if name.split(".")[0] == PACKAGE]:
            del sys.modules[name]


def typed_client(generated, live_stack, actor):
    return generated.load("client").AuthenticatedClient(base_url=live_stack.base_url, token=actor.key, timeout=httpx.Timeout(30))


def question(generated, text: str):
    models = generated.load("models")
    user = models.ChatMessageRequestType0(role=models.InstructionRoleEnum.USER, content=text)
    return models.ChatCompletionRequestRequest(model="helper", messages=[user])


def test_the_document_generates_a_client_without_warnings(generated):
    assert generated.returncode == 0, generated.output
    assert "Warning" not in generated.output and "Unable" not in generated.output, generated.output


def test_the_generated_client_creates_a_chat_completion(generated, live_stack, alice, stub_llm):
    stub_llm.script(Reply(content="Typed hello."))
    create = generated.load("api.chat.chat_completions_create")
    answer = create.sync_detailed(client=typed_client(generated, live_stack, alice), body=question(generated, "Hi"))
    assert answer.status_code == 200, answer.content
    completion = answer.parsed
    assert isinstance(completion, generated.load("models").ChatCompletion), "the answer parses into the typed chat.completion"
    assert completion.choices[0].message.content == "Typed hello." and completion.choices[0].finish_reason == "stop"
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens > 0
    assert stub_llm.requests[-1]["messages"][-1] == {"role": "user", "content": "Hi"}, "the typed body reached the model as sent"


def test_the_generated_client_lists_agents(generated, live_stack, alice, bob):
    agents = generated.load("api.agents.v1_agents_list").sync(client=typed_client(generated, live_stack, alice))
    assert [agent.name for agent in agents] == ["helper"], "the tenant's agents only, as typed Agent models"
    assert isinstance(agents[0].id, uuid.UUID)


def test_the_generated_client_runs_a_turn_in_the_background_and_reads_it(generated, live_stack, alice, stub_llm):
    client = typed_client(generated, live_stack, alice)
    queued = generated.load("api.chat.chat_completions_create").sync_detailed(
        client=client, body=question(generated, "Later"), prefer="respond-async"
    )
    assert queued.status_code == 202, queued.content
    turn_id = queued.parsed.id
    wait_for(lambda: Turn.objects.filter(id=turn_id, status=TurnStatus.SUCCEEDED).exists(), message="the turn")
    turn = generated.load("api.turns.v1_turns_retrieve").sync(id=str(turn_id), client=client)
    models = generated.load("models")
    assert turn.status == models.TurnStatusEnum.SUCCEEDED and turn.agent == "helper"
    assert turn.usage.total_tokens > 0 and turn.response.choices[0].message.content == "echo: Later"


def test_errors_parse_into_the_typed_openai_error_shape(generated, live_stack, alice, bob, stub_llm):
    create = generated.load("api.chat.chat_completions_create")
    create.sync(client=typed_client(generated, live_stack, alice), body=question(generated, "x"))
    theirs = str(Turn.objects.get(tenant=alice.tenant).id)
    read = generated.load("api.turns.v1_turns_retrieve")
    missing = read.sync_detailed(id=theirs, client=typed_client(generated, live_stack, bob))
    assert missing.status_code == 404
    models = generated.load("models")
    assert isinstance(missing.parsed, models.Error) and missing.parsed.error.type_ == "invalid_request_error"
    bob.key = "snt_nobody_nothing"
    refused = read.sync_detailed(id=theirs, client=typed_client(generated, live_stack, bob))
    assert refused.status_code == 401 and isinstance(refused.parsed, models.Error), refused.content
