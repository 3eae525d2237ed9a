"""LangChain's ChatOpenAI pointed at a live Sentinel: invoke, stream and tool binding."""

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

from agents.models import Turn, TurnStatus
from tests.stub_llm import Reply

pytestmark = pytest.mark.django_db(transaction=True)


@tool
def lookup(q: str) -> str:
    """Look a word up."""
    return f"{q} is a backend for LLM agents"


@pytest.fixture
def chat(live_stack, alice):
    return ChatOpenAI(model="helper", base_url=live_stack.api, api_key=alice.key, max_retries=0, timeout=30)


def test_it_invokes(chat, stub_llm):
    stub_llm.script(Reply(content="Hello from Sentinel."))
    answer = chat.invoke("Hi")
    assert isinstance(answer, AIMessage) and answer.content == "Hello from Sentinel."
    assert answer.usage_metadata["total_tokens"] > 0
    assert Turn.objects.get().status == TurnStatus.SUCCEEDED


def test_it_streams(chat, stub_llm):
    stub_llm.script(Reply(content="one two three"))
    pieces = [chunk.content for chunk in chat.stream("count")]
    assert "".join(pieces) == "one two three"
    assert len([p for p in pieces if p]) == 3, "the answer arrives word by word, as the model sent it"
    assert Turn.objects.get().output.content == "one two three"


def test_a_bound_tool_is_called_and_its_result_answered(chat, stub_llm):
    call = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "sentinel"}'}}
    stub_llm.script(Reply(tool_calls=[call]), Reply(content="Sentinel runs agents."))
    with_tools = chat.bind_tools([lookup])
    history = [HumanMessage("what is sentinel?")]
    asked = with_tools.invoke(history)
    assert asked.tool_calls == [{"name": "lookup", "args": {"q": "sentinel"}, "id": "call_1", "type": "tool_call"}]
    history += [asked, ToolMessage(lookup.invoke(asked.tool_calls[0]["args"]), tool_call_id="call_1")]
    final = with_tools.invoke(history)
    assert final.content == "Sentinel runs agents."
    sent = stub_llm.requests[0]
    assert sent["tools"][0]["function"]["name"] == "lookup", "the bound tool reaches the model"
    roles = [m["role"] for m in stub_llm.requests[1]["messages"]]
    assert roles[-3:] == ["user", "assistant", "tool"], "the whole history the client sent reaches the model"
    assert stub_llm.requests[1]["messages"][-1]["content"] == "sentinel is a backend for LLM agents"
