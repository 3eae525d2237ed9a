"""The whole turn path through a live server and a real Celery worker, driven by the official openai client."""

import concurrent.futures
import json
import threading
import uuid

import httpx
import openai
import pytest

from agents.models import Message, Turn, TurnStatus
from tests.conftest import make_actor, wait_for
from tests.stub_llm import Reply

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def client(live_stack, alice):
    return openai.OpenAI(base_url=live_stack.api, api_key=alice.key, max_retries=0, timeout=30)


def http(live_stack, actor):
    return httpx.Client(base_url=live_stack.base_url, headers={"Authorization": f"Bearer {actor.key}"}, timeout=30)


def submit_async(h: httpx.Client, content: str = "x") -> httpx.Response:
    body = {"model": "helper", "messages": [{"role": "user", "content": content}]}
    return h.post("/v1/chat/completions", json=body, headers={"Prefer": "respond-async"})


def test_it_lists_the_tenants_agents_as_models(client, alice, bob):
    assert [m.id for m in client.models.list()] == ["helper"]


def test_it_answers_a_completion(client, stub_llm):
    stub_llm.script(Reply(content="Hello there, friend."))
    completion = client.chat.completions.create(model="helper", messages=[{"role": "user", "content": "Hi"}])
    assert completion.choices[0].message.content == "Hello there, friend."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.object == "chat.completion" and completion.model == "helper"
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens > 0
    turn = Turn.objects.get()
    assert completion.id == f"chatcmpl-{turn.id.hex}"
    assert turn.status == TurnStatus.SUCCEEDED and turn.output.content == "Hello there, friend."


def test_it_streams_in_openai_chunks(client, stub_llm):
    stub_llm.script(Reply(content="one two three four five"))
    stream = client.chat.completions.create(
        model="helper", messages=[{"role": "user", "content": "count"}], stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three four five"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert Turn.objects.get().output.content == text, "the streamed answer is persisted whole"


def test_the_raw_stream_ends_with_done(live_stack, alice, stub_llm):
    stub_llm.script(Reply(content="a b"))
    body = {"model": "helper", "messages": [{"role": "user", "content": "x"}], "stream": True}
    with http(live_stack, alice) as h, h.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in lines)


def test_a_tool_call_round_trip(client, stub_llm):
    call = {"id": "call_42", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "sentinel"}'}}
    stub_llm.script(Reply(tool_calls=[call]), Reply(content="Sentinel runs agents."))
    tools = [
        {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}
    ]
    first = client.chat.completions.with_raw_response.create(
        model="helper", messages=[{"role": "user", "content": "what is sentinel?"}], tools=tools
    )
    conversation = first.headers["sentinel-conversation-id"]
    answer = first.parse()
    assert answer.choices[0].finish_reason == "tool_calls"
    tool_call = answer.choices[0].message.tool_calls[0]
    assert tool_call.function.name == "lookup" and json.loads(tool_call.function.arguments) == {"q": "sentinel"}
    final = client.chat.completions.create(
        model="helper",
        messages=[{"role": "tool", "tool_call_id": tool_call.id, "content": "a backend for LLM agents"}],
        tools=tools,
        extra_body={"conversation": conversation},
    )
    assert final.choices[0].message.content == "Sentinel runs agents."
    sent = stub_llm.requests[1]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool"], "the server supplies the history"
    assert sent[2]["tool_calls"][0]["id"] == "call_42" and sent[3]["tool_call_id"] == "call_42"


def test_a_streamed_tool_call(client, stub_llm):
    call = {"id": "call_7", "type": "function", "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'}}
    stub_llm.script(Reply(tool_calls=[call]))
    chunks = list(
        client.chat.completions.create(
            model="helper",
            messages=[{"role": "user", "content": "1+2"}],
            stream=True,
            tools=[{"type": "function", "function": {"name": "add"}}],
        )
    )
    deltas = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert deltas[0].id == "call_7" and deltas[0].function.name == "add"
    assert "".join(d.function.arguments or "" for d in deltas) == '{"a": 1, "b": 2}'
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


@pytest.mark.parametrize(
    "reply,exception,status",
    [
        (Reply(status=401), openai.AuthenticationError, 401),
        (Reply(status=429), openai.RateLimitError, 429),
        (Reply(status=500), openai.InternalServerError, 502),
        (Reply(hang=10), openai.InternalServerError, 504),
    ],
)
def test_provider_errors_reach_the_client_with_the_seeds_status(client, stub_llm, reply, exception, status):
    stub_llm.script(reply)
    with pytest.raises(exception) as info:
        client.chat.completions.create(model="helper", messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == status
    assert info.value.body["code"].startswith("provider_")


def test_a_stream_that_fails_before_its_first_token_gets_the_error_status(client, stub_llm):
    stub_llm.script(Reply(status=401))
    with pytest.raises(openai.AuthenticationError):
        list(client.chat.completions.create(model="helper", messages=[{"role": "user", "content": "hi"}], stream=True))


def test_the_client_sees_our_own_auth_errors(live_stack):
    bad = openai.OpenAI(base_url=live_stack.api, api_key="snt_nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_respond_async_answers_202_and_the_turn_can_be_read(live_stack, alice, stub_llm):
    stub_llm.script(Reply(content="later", delay=0.3))
    with http(live_stack, alice) as h:
        response = submit_async(h)
        assert response.status_code == 202
        assert response.headers["Preference-Applied"] == "respond-async"
        turn = response.json()
        assert response.headers["Location"] == f"/v1/turns/{turn['id']}"
        assert turn["status"] in ("queued", "running")
        done = wait_for(lambda: (t := h.get(f"/v1/turns/{turn['id']}").json())["status"] == "succeeded" and t, message="turn to finish")
        assert done["response"]["choices"][0]["message"]["content"] == "later"
        events = h.get(f"/v1/turns/{turn['id']}/events").json()["data"]
        kinds = [e["kind"] for e in events]
        assert kinds[0] == "queued" and kinds[-1] == "completed" and "provider_request" in kinds


def test_turn_events_stream_resumes_from_last_event_id(live_stack, alice, stub_llm):
    stub_llm.script(Reply(content="alpha beta gamma delta", chunk_delay=0.05))
    with http(live_stack, alice) as h:
        turn_id = submit_async(h).json()["id"]

        def read_sse(headers):
            events, current = [], {}
            with h.stream("GET", f"/v1/turns/{turn_id}/events", headers={"Accept": "text/event-stream", **headers}) as response:
                assert response.status_code == 200
                for line in response.iter_lines():
                    if not line:
                        if current:
                            events.append(current)
                        current = {}
                        continue
                    field, _, value = line.partition(": ")
                    current[field] = value
            return events

        everything = read_sse({})
        assert everything[-1]["event"] == "done"
        deltas = [json.loads(e["data"])["content"] for e in everything if e.get("event") == "delta"]
        assert "".join(deltas) == "alpha beta gamma delta"
        # reconnect after the second event: exactly the rest, nothing lost or repeated
        resumed = read_sse({"Last-Event-ID": everything[1]["id"]})
        assert [e["id"] for e in resumed] == [e["id"] for e in everything[2:]]


def test_turn_events_of_another_tenant_are_a_404(live_stack, alice, bob, stub_llm):
    with http(live_stack, alice) as h:
        turn_id = submit_async(h).json()["id"]
    with http(live_stack, bob) as h:
        for path in (f"/v1/turns/{turn_id}", f"/v1/turns/{turn_id}/events"):
            response = h.get(path)
            assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
        assert h.get(f"/v1/turns/{turn_id}/events", headers={"Accept": "text/event-stream"}).status_code == 404


def test_an_idempotency_key_replays_the_same_turn(live_stack, alice, stub_llm):
    body = {"model": "helper", "messages": [{"role": "user", "content": "once"}]}
    key = str(uuid.uuid4())
    with http(live_stack, alice) as h:
        first = h.post("/v1/chat/completions", json=body, headers={"Idempotency-Key": key})
        second = h.post("/v1/chat/completions", json=body, headers={"Idempotency-Key": key})
        assert first.status_code == second.status_code == 200
        assert first.json()["id"] == second.json()["id"]
        assert Turn.objects.count() == 1 and len(stub_llm.requests) == 1
        changed = h.post("/v1/chat/completions", json={**body, "temperature": 0.5}, headers={"Idempotency-Key": key})
        assert changed.status_code == 422 and changed.json()["error"]["code"] == "idempotency_key_reused"
    assert Turn.objects.count() == 1


def test_concurrent_requests_with_one_idempotency_key_make_one_turn(live_stack, alice, stub_llm):
    stub_llm.script(Reply(content="slow", delay=0.5))
    body = {"model": "helper", "messages": [{"role": "user", "content": "race"}]}
    key = str(uuid.uuid4())

    def call(_):
        with http(live_stack, alice) as h:
            return h.post("/v1/chat/completions", json=body, headers={"Idempotency-Key": key}).json()["id"]

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        ids = set(pool.map(call, range(4)))
    assert len(ids) == 1 and Turn.objects.count() == 1


def test_concurrent_requests_to_one_conversation_run_in_order(live_stack, alice, stub_llm):
    with http(live_stack, alice) as h:
        first = h.post("/v1/chat/completions", json={"model": "helper", "messages": [{"role": "user", "content": "m0"}]})
        conversation = first.headers["sentinel-conversation-id"]
    stub_llm.script(*[Reply(content=f"r{i}", delay=0.1) for i in range(1, 6)])
    barrier = threading.Barrier(5)

    def send(i):
        barrier.wait()
        with http(live_stack, alice) as h:
            body = {"model": "helper", "conversation": conversation, "messages": [{"role": "user", "content": f"m{i}"}]}
            return h.post("/v1/chat/completions", json=body).status_code

    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        assert list(pool.map(send, range(1, 6))) == [200] * 5
    messages = list(Message.objects.filter(conversation_id=conversation).values_list("role", flat=True))
    assert messages == ["user", "assistant"] * 6, "each turn's reply must follow its own question, never interleave"
    # every model call saw a complete, alternating history ending with its own question
    for request in stub_llm.requests[1:]:
        roles = [m["role"] for m in request["messages"][1:]]
        assert roles == ["user", "assistant"] * (len(roles) // 2) + ["user"]


def test_conversations_and_messages_are_listed_per_tenant(live_stack, alice, bob, stub_llm):
    with http(live_stack, alice) as h:
        conversation = h.post("/v1/chat/completions", json={"model": "helper", "messages": [{"role": "user", "content": "hi"}]}).headers[
            "sentinel-conversation-id"
        ]
        listed = h.get("/v1/conversations").json()["results"]
        assert [c["id"] for c in listed] == [conversation]
        messages = h.get(f"/v1/conversations/{conversation}/messages").json()["results"]
        assert [(m["role"], m["content"]) for m in messages] == [("user", "hi"), ("assistant", "echo: hi")]
    with http(live_stack, bob) as h:
        assert h.get("/v1/conversations").json()["results"] == []
        assert h.get(f"/v1/conversations/{conversation}").status_code == 404
        assert h.get(f"/v1/conversations/{conversation}/messages").status_code == 404


def test_the_local_models_list_is_per_tenant(live_stack):
    carol = make_actor("carol", agent_name="carols-agent")
    with http(live_stack, carol) as h:
        assert [m["id"] for m in h.get("/v1/models").json()["data"]] == ["carols-agent"]
