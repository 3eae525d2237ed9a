"""LlamaIndex's OpenAI-like LLM (llama-index-llms-openai-like) pointed at a live Sentinel."""

import pytest
from llama_index.core.llms import ChatMessage
from llama_index.llms.openai_like import OpenAILike

from agents.models import Turn, TurnStatus
from tests.stub_llm import Reply

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def llm(live_stack, alice):
    return OpenAILike(
        model="helper",
        api_base=live_stack.api,
        api_key=alice.key,
        is_chat_model=True,
        is_function_calling_model=True,
        max_retries=0,
        timeout=30,
    )


def test_it_chats(llm, stub_llm):
    stub_llm.script(Reply(content="Indexed and answered."))
    answer = llm.chat([ChatMessage(role="system", content="Be brief."), ChatMessage(role="user", content="Hi")])
    assert answer.message.content == "Indexed and answered."
    assert Turn.objects.get().status == TurnStatus.SUCCEEDED
    assert [m["role"] for m in stub_llm.requests[0]["messages"]][-2:] == ["system", "user"]


def test_it_completes_a_prompt(llm, stub_llm):
    stub_llm.script(Reply(content="Completed."))
    assert llm.complete("Say done").text == "Completed."


def test_it_streams(llm, stub_llm):
    stub_llm.script(Reply(content="alpha beta gamma"))
    deltas = [chunk.delta for chunk in llm.stream_chat([ChatMessage(role="user", content="go")])]
    assert "".join(deltas) == "alpha beta gamma"
    assert Turn.objects.get().output.content == "alpha beta gamma"


def test_it_calls_a_tool(llm, stub_llm):
    from llama_index.core.tools import FunctionTool

    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    call = {"id": "call_a", "type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}}
    stub_llm.script(Reply(tool_calls=[call]))
    tool = FunctionTool.from_defaults(fn=add)
    response = llm.chat_with_tools([tool], user_msg="2+3?")
    selections = llm.get_tool_calls_from_response(response, error_on_no_tool_call=True)
    assert [(s.tool_name, s.tool_kwargs) for s in selections] == [("add", {"a": 2, "b": 3})]
    assert stub_llm.requests[0]["tools"][0]["function"]["name"] == "add"
