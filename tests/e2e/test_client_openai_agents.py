"""The OpenAI Agents SDK, with its chat-completions model class, pointed at a live Sentinel.

The SDK's package is named `agents`, like Sentinel's app, so the client runs as its own program
(tests/e2e/programs/agents_sdk.py) in a fresh interpreter started outside the checkout.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agents.models import Turn, TurnStatus
from tests.stub_llm import Reply

pytestmark = pytest.mark.django_db(transaction=True)

PROGRAM = Path(__file__).parent / "programs" / "agents_sdk.py"


def run_program(live_stack, actor, scenario: str, tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DJANGO_SETTINGS_MODULE", "OPENAI_API_KEY")}
    done = subprocess.run(
        [sys.executable, str(PROGRAM), live_stack.api, actor.key, scenario],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"the Agents SDK program failed:\n{done.stderr[-3000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_an_agent_calls_its_function_tool(live_stack, alice, stub_llm, tmp_path):
    call = {"id": "call_w", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}
    stub_llm.script(Reply(tool_calls=[call]), Reply(content="It is sunny in Oslo."))
    result = run_program(live_stack, alice, "tool", tmp_path)
    assert result == {"final_output": "It is sunny in Oslo.", "last_agent": "forecaster"}
    first, second = stub_llm.requests
    assert [t["function"]["name"] for t in first["tools"]] == ["weather"]
    assert second["messages"][-1] == {"role": "tool", "tool_call_id": "call_w", "content": "sunny in Oslo"}
    assert [t.status for t in Turn.objects.all()] == [TurnStatus.SUCCEEDED] * 2


def test_an_agent_hands_off_to_another(live_stack, alice, stub_llm, tmp_path):
    handoff = {"id": "call_h", "type": "function", "function": {"name": "transfer_to_billing", "arguments": "{}"}}
    stub_llm.script(Reply(tool_calls=[handoff]), Reply(content="Billing here: your invoice is paid."))
    result = run_program(live_stack, alice, "handoff", tmp_path)
    assert result == {"final_output": "Billing here: your invoice is paid.", "last_agent": "billing"}
    first, second = stub_llm.requests
    assert "transfer_to_billing" in [t["function"]["name"] for t in first["tools"]]
    assert "You answer billing questions." in json.dumps(second["messages"]), "the second call runs as the billing agent"


def test_the_sdk_streams_through_sentinel(live_stack, alice, stub_llm, tmp_path):
    stub_llm.script(Reply(content="streamed through the SDK"))
    result = run_program(live_stack, alice, "stream", tmp_path)
    assert "".join(result["deltas"]) == result["final_output"] == "streamed through the SDK"
    assert len(result["deltas"]) == 4
