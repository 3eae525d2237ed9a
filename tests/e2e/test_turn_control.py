"""Control of running work on a live stack: cancel, interrupt and resume, double-texting, approvals."""

import concurrent.futures
import contextlib
import json
import subprocess
import time

import httpx
import pytest

from agents import streams
from agents.models import Approval, ApprovalStatus, Message, Turn, TurnStatus
from agents.tasks import supervise
from budgets.models import Reservation, SpendEntry
from sentinel_site.redis import sync_client
from sentinel_site.stack import BASE_DIR, web_command
from tests.conftest import _answers, free_port, start_worker, wait_for
from tests.stub_llm import Reply

pytestmark = pytest.mark.django_db(transaction=True)

LONG = " ".join(f"word{i}" for i in range(60))  # streamed word by word: 60 chunks


def http(live_stack, actor) -> httpx.Client:
    return httpx.Client(base_url=live_stack.api, headers={"Authorization": f"Bearer {actor.key}"}, timeout=30)


def body(content: str, **extra) -> dict:
    return {"model": "helper", "messages": [{"role": "user", "content": content}], **extra}


def start(h: httpx.Client, content: str = "tell me a story", **extra) -> dict:
    response = h.post("/chat/completions", json=body(content, **extra), headers={"Prefer": "respond-async"})
    assert response.status_code == 202, response.text
    return response.json()


def running(turn_id) -> bool:
    return Turn.objects.filter(id=turn_id, status=TurnStatus.RUNNING).exists()


def some_streamed(turn_id, pieces: int = 3) -> bool:
    """A few pieces of the answer are on the turn's live stream."""
    entries = sync_client().xrange(streams.key(turn_id))
    return sum(1 for entry_id, fields in entries if streams._decode(entry_id, fields).kind == "delta") >= pieces


def no_held_reservations(turn_id) -> bool:
    return not Reservation.objects.filter(turn_id=turn_id, status=Reservation.Status.HELD).exists()


# --- cancel ----------------------------------------------------------------------------------------
def test_a_cancelled_stream_stops_within_a_second_and_keeps_its_partial_answer(live_stack, alice, stub_llm):
    stub_llm.script(Reply(content=LONG, chunk_delay=0.2))
    chunks, cancelled_at = [], None
    with http(live_stack, alice) as h, h.stream("POST", "/chat/completions", json=body("go", stream=True)) as stream:
        turn_id = stream.headers["sentinel-turn-id"]
        for line in stream.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunks.append(json.loads(line[6:]))
            if len(chunks) == 4 and cancelled_at is None:
                cancelled_at = time.monotonic()
                answer = h.post(f"/turns/{turn_id}/cancel")
                assert answer.status_code in (200, 202), answer.text
        ended_after = time.monotonic() - cancelled_at
    assert ended_after < 1.5, f"the stream went on for {ended_after:.2f}s after the cancel"
    assert chunks[-1]["choices"][0]["finish_reason"] == "cancelled"
    turn = Turn.objects.select_related("output").get(id=turn_id)
    assert turn.status == TurnStatus.CANCELLED and turn.finish_reason == "cancelled"
    partial = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert turn.output is not None and turn.output.content == partial and LONG.startswith(partial.strip()) and partial != LONG
    assert no_held_reservations(turn_id), "the reservation was settled or released"
    entry = SpendEntry.objects.get(turn_id=turn_id)
    assert entry.completion_tokens > 0 and turn.cost == entry.cost, "the tokens streamed were paid for, once"


def test_a_cancelled_queued_turn_never_reaches_the_model(live_stack, alice, stub_llm):
    stub_llm.script(Reply(content="first answer", delay=1.5))
    with http(live_stack, alice) as h:
        first = start(h, "first")
        wait_for(lambda: running(first["id"]), message="the first turn to start")
        second = start(h, "second, never asked", conversation=first["conversation"])
        answer = h.post(f"/turns/{second['id']}/cancel")
        assert answer.status_code == 200 and answer.json()["status"] == "cancelled"
        again = h.post(f"/turns/{second['id']}/cancel")
        assert again.status_code == 200 and again.json()["status"] == "cancelled", "cancel is idempotent"
        wait_for(lambda: Turn.objects.filter(id=first["id"], status=TurnStatus.SUCCEEDED).exists(), message="the first turn")
        finished = h.post(f"/turns/{first['id']}/cancel")
        assert finished.status_code == 409 and finished.json()["error"]["code"] == "turn_already_finished"
    assert len(stub_llm.requests) == 1, "the cancelled turn never reached the model"
    assert all("second" not in m["content"] for m in stub_llm.requests[0]["messages"])
    assert no_held_reservations(second["id"]) and not SpendEntry.objects.filter(turn_id=second["id"]).exists()
    assert Reservation.objects.get(turn_id=second["id"]).status == Reservation.Status.RELEASED


def test_a_stream_whose_client_leaves_cancels_its_turn(live_stack, alice, stub_llm):
    stub_llm.script(Reply(content=LONG, chunk_delay=0.2))
    with http(live_stack, alice) as h, h.stream("POST", "/chat/completions", json=body("go", stream=True)) as stream:
        turn_id = stream.headers["sentinel-turn-id"]
        next(line for line in stream.iter_lines() if '"content":"word' in line)
    wait_for(lambda: Turn.objects.filter(id=turn_id, status=TurnStatus.CANCELLED).exists(), timeout=5, message="the turn cancelled")
    output = Turn.objects.select_related("output").get(id=turn_id).output
    assert output is None or len(output.content.split()) < 30, "it stopped soon after the client left"


def test_a_stream_that_asked_to_continue_finishes_without_its_client(live_stack, alice, stub_llm):
    stub_llm.script(Reply(content="one two three four five six", chunk_delay=0.2))
    headers = {"Sentinel-On-Disconnect": "continue"}
    with http(live_stack, alice) as h, h.stream("POST", "/chat/completions", json=body("go", stream=True), headers=headers) as stream:
        turn_id = stream.headers["sentinel-turn-id"]
        next(line for line in stream.iter_lines() if '"content":"one' in line)
    wait_for(lambda: Turn.objects.filter(id=turn_id, status=TurnStatus.SUCCEEDED).exists(), timeout=10, message="the turn to finish")


def test_a_bad_on_disconnect_header_is_refused(live_stack, alice):
    with http(live_stack, alice) as h:
        answer = h.post("/chat/completions", json=body("x", stream=True), headers={"Sentinel-On-Disconnect": "maybe"})
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "Sentinel-On-Disconnect"


def test_another_tenants_turn_cannot_be_cancelled_interrupted_or_resumed(live_stack, alice, bob, stub_llm):
    stub_llm.script(Reply(content="alice's", delay=0.5))
    with http(live_stack, alice) as h:
        turn = start(h)
    with http(live_stack, bob) as h:
        for action in ("cancel", "interrupt", "resume"):
            assert h.post(f"/turns/{turn['id']}/{action}").status_code == 404
        assert h.post(f"/conversations/{turn['conversation']}/interrupt").status_code == 404
    wait_for(lambda: Turn.objects.filter(id=turn["id"], status=TurnStatus.SUCCEEDED).exists(), message="alice's turn to finish")


# --- interrupt and resume --------------------------------------------------------------------------
@contextlib.contextmanager
def web_process(live_stack, log):
    """A web process of its own (on its own port) on the live stack's database and Redis."""
    port = free_port()
    web = subprocess.Popen(
        web_command("127.0.0.1", port), cwd=BASE_DIR, env=live_stack.env, stdout=log.open("ab"), stderr=subprocess.STDOUT
    )
    try:
        wait_for(lambda: _answers(f"http://127.0.0.1:{port}/health/live"), timeout=30, message="a web process")
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        web.terminate()
        web.wait(30)


def test_an_interrupted_turn_resumes_after_the_stack_restarts_with_one_reply_and_the_spend_of_its_calls(
    live_stack, alice, stub_llm, tmp_path
):
    stub_llm.script(Reply(content=LONG, chunk_delay=0.2), Reply(content="the whole answer"))
    headers = {"Authorization": f"Bearer {alice.key}"}
    with web_process(live_stack, tmp_path / "web-before.log") as api, httpx.Client(base_url=api, headers=headers, timeout=30) as h:
        turn = start(h)
        wait_for(lambda: some_streamed(turn["id"]), message="some of the answer")
        assert h.post(f"/turns/{turn['id']}/interrupt").status_code in (200, 202)
        wait_for(lambda: Turn.objects.filter(id=turn["id"], status=TurnStatus.INTERRUPTED).exists(), timeout=5, message="the interrupt")
    partial = Turn.objects.select_related("output").get(id=turn["id"]).output.content
    assert partial and LONG.startswith(partial.strip())
    live_stack.worker.terminate()  # the web process above is gone too: the whole stack is down
    live_stack.worker.wait(30)
    live_stack.worker = start_worker(live_stack.env, live_stack.worker_log)
    with web_process(live_stack, tmp_path / "web-after.log") as api, httpx.Client(base_url=api, headers=headers, timeout=30) as h:
        resumed = h.post(f"/turns/{turn['id']}/resume", json={})
        assert resumed.status_code == 202 and resumed.json()["status"] == "queued"
        wait_for(lambda: Turn.objects.filter(id=turn["id"], status=TurnStatus.SUCCEEDED).exists(), message="the resumed turn")
        again = h.post(f"/turns/{turn['id']}/resume", json={})
        assert again.status_code == 409 and again.json()["error"]["code"] == "turn_not_interrupted"
    done = Turn.objects.select_related("output").get(id=turn["id"])
    replies = Message.objects.filter(turn_id=turn["id"], role="assistant")
    assert [m.content for m in replies] == ["the whole answer"], "exactly one reply: the partial gave way to it"
    assert done.output.content == "the whole answer"
    assert stub_llm.requests[1]["messages"] == stub_llm.requests[0]["messages"], "it continued from the persisted request"
    entries = SpendEntry.objects.filter(turn_id=turn["id"])
    assert entries.count() == 2 and done.cost == sum(e.cost for e in entries), "both calls made are paid for, and only they"


def test_resuming_with_input_adds_the_message_to_the_request_and_the_history(live_stack, alice, stub_llm):
    # The resumed call streams slower than a stop poll: the stop that interrupted the turn must not stop it again.
    stub_llm.script(Reply(content=LONG, chunk_delay=0.2), Reply(content="answered with the addition", chunk_delay=0.3))
    with http(live_stack, alice) as h:
        turn = start(h, "first question")
        wait_for(lambda: some_streamed(turn["id"]), message="the turn to stream")
        h.post(f"/turns/{turn['id']}/interrupt")
        wait_for(lambda: Turn.objects.filter(id=turn["id"], status=TurnStatus.INTERRUPTED).exists(), timeout=5, message="the interrupt")
        assert h.post(f"/turns/{turn['id']}/resume", json={"input": "and one more thing"}).status_code == 202
        wait_for(lambda: Turn.objects.filter(id=turn["id"], status=TurnStatus.SUCCEEDED).exists(), message="the resumed turn")
    sent = stub_llm.requests[1]["messages"]
    assert sent[-1] == {"role": "user", "content": "and one more thing"}
    history = [(m.role, m.content) for m in Message.objects.filter(turn_id=turn["id"])]
    assert history == [("user", "first question"), ("user", "and one more thing"), ("assistant", "answered with the addition")]


def test_a_worker_stopped_with_sigterm_interrupts_its_turn_and_the_next_worker_resumes_it(live_stack, alice, stub_llm):
    stub_llm.script(Reply(content=LONG, chunk_delay=0.2), Reply(content="finished on the next worker"))
    with http(live_stack, alice) as h:
        turn = start(h)
    wait_for(lambda: some_streamed(turn["id"]), message="the turn to stream")
    started = time.monotonic()
    live_stack.worker.terminate()  # SIGTERM: a warm shutdown
    live_stack.worker.wait(30)
    assert time.monotonic() - started < 10, "the shutdown did not wait for the whole answer"
    interrupted = Turn.objects.get(id=turn["id"])
    assert interrupted.status == TurnStatus.INTERRUPTED and interrupted.stop_requested == "shutdown"
    live_stack.worker = start_worker(live_stack.env, live_stack.worker_log)
    wait_for(lambda: Turn.objects.filter(id=turn["id"], status=TurnStatus.SUCCEEDED).exists(), message="the turn resumed")
    assert [m.content for m in Message.objects.filter(turn_id=turn["id"], role="assistant")] == ["finished on the next worker"]
    assert Turn.objects.get(id=turn["id"]).attempt == 2


def test_interrupting_a_conversation_interrupts_its_unfinished_turns(live_stack, alice, stub_llm):
    stub_llm.script(Reply(content=LONG, chunk_delay=0.2))
    with http(live_stack, alice) as h:
        first = start(h, "one")
        wait_for(lambda: running(first["id"]), message="the first turn")
        second = start(h, "two", conversation=first["conversation"])
        answer = h.post(f"/conversations/{first['conversation']}/interrupt")
        assert answer.status_code == 200 and {t["id"] for t in answer.json()["data"]} == {first["id"], second["id"]}
    wait_for(lambda: Turn.objects.filter(conversation_id=first["conversation"], status=TurnStatus.INTERRUPTED).count() == 2,
             timeout=5, message="both turns interrupted")  # fmt: skip
    assert len(stub_llm.requests) == 1


# --- double-texting --------------------------------------------------------------------------------
def racing(h: httpx.Client, conversation: str, strategy: str, texts: tuple[str, str]) -> list[httpx.Response]:
    """Two messages sent at the same moment to one conversation."""

    def send(text: str) -> httpx.Response:
        return h.post("/chat/completions", json=body(text, conversation=conversation, multitask_strategy=strategy),
                      headers={"Prefer": "respond-async"})  # fmt: skip

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        return list(pool.map(send, texts))


def conversation_of(h: httpx.Client) -> str:
    return h.post("/conversations", json={"agent": "helper"}).json()["id"]


def test_reject_lets_one_of_two_racing_messages_in_and_refuses_the_other_with_its_turn(live_stack, alice, stub_llm):
    stub_llm.script(Reply(content="slow", delay=1.0))
    with http(live_stack, alice) as h:
        answers = racing(h, conversation_of(h), "reject", ("a", "b"))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [202, 409], [a.text for a in answers]
    admitted = next(a for a in answers if a.status_code == 202).json()
    refused = next(a for a in answers if a.status_code == 409)
    assert refused.json()["error"]["code"] == "conversation_busy"
    assert refused.headers["sentinel-running-turn-id"] == admitted["id"]
    assert Turn.objects.filter(conversation_id=admitted["conversation"]).count() == 1, "nothing of the refused one was written"


def test_enqueue_runs_two_racing_messages_one_after_the_other(live_stack, alice, stub_llm):
    stub_llm.script(Reply(content="first", delay=0.3), Reply(content="second"))
    with http(live_stack, alice) as h:
        conversation = conversation_of(h)
        answers = racing(h, conversation, "enqueue", ("a", "b"))
    assert [a.status_code for a in answers] == [202, 202]
    wait_for(lambda: Turn.objects.filter(conversation_id=conversation, status=TurnStatus.SUCCEEDED).count() == 2, message="both turns")
    turns = list(Turn.objects.filter(conversation_id=conversation).order_by("seq"))
    assert turns[0].finished_at <= turns[1].started_at, "one at a time, in order"


def test_interrupt_stops_the_running_turn_keeps_its_partial_answer_and_runs_the_new_message(live_stack, alice, stub_llm):
    stub_llm.script(Reply(content=LONG, chunk_delay=0.2), Reply(content="the new answer"))
    with http(live_stack, alice) as h:
        first = start(h, "long question")
        wait_for(lambda: some_streamed(first["id"]), message="the first turn to stream")
        second = start(h, "never mind, this instead", conversation=first["conversation"], multitask_strategy="interrupt")
        wait_for(lambda: Turn.objects.filter(id=second["id"], status=TurnStatus.SUCCEEDED).exists(), message="the new message")
    stopped = Turn.objects.select_related("output").get(id=first["id"])
    assert stopped.status == TurnStatus.INTERRUPTED and stopped.output.content
    sent = stub_llm.requests[1]["messages"]
    assert {"role": "assistant", "content": stopped.output.content} in sent, "the partial answer stayed in the history"
    assert sent[-1]["content"] == "never mind, this instead"


def test_rollback_cancels_the_running_turn_and_removes_its_messages(live_stack, alice, stub_llm):
    stub_llm.script(Reply(content=LONG, chunk_delay=0.2), Reply(content="the only answer"))
    with http(live_stack, alice) as h:
        first = start(h, "a question to forget")
        wait_for(lambda: some_streamed(first["id"]), message="the first turn to stream")
        second = start(h, "the real question", conversation=first["conversation"], multitask_strategy="rollback")
        wait_for(lambda: Turn.objects.filter(id=second["id"], status=TurnStatus.SUCCEEDED).exists(), message="the new message")
    assert Turn.objects.get(id=first["id"]).status == TurnStatus.CANCELLED
    assert not Message.objects.filter(turn_id=first["id"]).exists()
    sent = stub_llm.requests[1]["messages"]
    assert all("forget" not in (m.get("content") or "") and "word" not in (m.get("content") or "") for m in sent)


def test_an_unknown_multitask_strategy_is_refused(live_stack, alice):
    with http(live_stack, alice) as h:
        answer = h.post("/chat/completions", json=body("x", multitask_strategy="sometimes"))
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "multitask_strategy"


# --- approvals -------------------------------------------------------------------------------------
CALL = {"id": "call_1", "type": "function", "function": {"name": "delete_file", "arguments": '{"path": "/tmp/a"}'}}
TOOLS = [
    {"type": "function", "function": {"name": "delete_file", "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}}}
]


@pytest.fixture
def careful(alice):
    alice.agent.requires_approval = ["delete_file"]
    alice.agent.save()
    return alice


def held(h: httpx.Client, stub_llm, **extra) -> tuple[dict, dict]:
    turn = start(h, "clean up", tools=TOOLS, **extra)
    wait_for(lambda: Turn.objects.filter(id=turn["id"], status=TurnStatus.AWAITING_APPROVAL).exists(), message="the approval")
    pending = h.get("/approvals", params={"status": "pending"}).json()["data"]
    assert len(pending) == 1 and pending[0]["turn"] == turn["id"] and pending[0]["tool_calls"] == [CALL]
    assert h.get(f"/turns/{turn['id']}").json()["pending_approval"] == pending[0]["id"]
    return turn, pending[0]


def test_an_approved_call_with_edited_arguments_is_the_answer(live_stack, careful, bob, stub_llm):
    stub_llm.script(Reply(tool_calls=[CALL]))
    with http(live_stack, careful) as h:
        turn, approval = held(h, stub_llm)
        with http(live_stack, bob) as other:
            assert other.post(f"/approvals/{approval['id']}", json={"approve": True}).status_code == 404
            assert other.get(f"/approvals/{approval['id']}").status_code == 404
        answer = h.post(f"/approvals/{approval['id']}", json={"approve": True, "arguments": {"call_1": {"path": "/tmp/b"}}})
        assert answer.status_code == 200 and answer.json()["status"] == "approved"
        assert h.post(f"/approvals/{approval['id']}", json={"approve": False}).status_code == 409
        done = h.get(f"/turns/{turn['id']}").json()
    assert done["status"] == "succeeded"
    calls = done["response"]["choices"][0]["message"]["tool_calls"]
    assert json.loads(calls[0]["function"]["arguments"]) == {"path": "/tmp/b"}, "the edited arguments are used"
    assert len(stub_llm.requests) == 1
    assert Approval.objects.get(id=approval["id"]).decided_by


def test_a_denied_call_is_told_to_the_model_which_answers_again(live_stack, careful, stub_llm):
    stub_llm.script(Reply(tool_calls=[CALL]), Reply(content="I will not delete it."))
    with http(live_stack, careful) as h:
        turn, approval = held(h, stub_llm)
        assert h.post(f"/approvals/{approval['id']}", json={"approve": False, "reason": "keep it"}).status_code == 200
        wait_for(lambda: Turn.objects.filter(id=turn["id"], status=TurnStatus.SUCCEEDED).exists(), message="the second answer")
    told = stub_llm.requests[1]["messages"]
    assert told[-2]["tool_calls"][0]["id"] == "call_1" and told[-1]["role"] == "tool" and "keep it" in told[-1]["content"]
    assert Turn.objects.select_related("output").get(id=turn["id"]).output.content == "I will not delete it."
    assert SpendEntry.objects.filter(turn_id=turn["id"]).count() == 2


def test_an_approval_left_past_its_ttl_is_denied_and_the_conversation_goes_on(live_stack, careful, stub_llm):
    stub_llm.script(Reply(tool_calls=[CALL]), Reply(content="I could not get approval."), Reply(content="next answer"))
    with http(live_stack, careful) as h:
        turn, approval = held(h, stub_llm)
        later = start(h, "are you there?", conversation=turn["conversation"])
        Approval.objects.filter(id=approval["id"]).update(expires_at="2000-01-01T00:00:00Z")
        supervise()
        wait_for(lambda: Turn.objects.filter(id=later["id"], status=TurnStatus.SUCCEEDED).exists(), message="the later message")
    assert Approval.objects.get(id=approval["id"]).status == ApprovalStatus.EXPIRED
    assert Turn.objects.get(id=turn["id"]).status == TurnStatus.SUCCEEDED


def test_a_bad_decision_is_refused_and_changes_nothing(live_stack, careful, stub_llm):
    stub_llm.script(Reply(tool_calls=[CALL]))
    with http(live_stack, careful) as h:
        turn, approval = held(h, stub_llm)
        unknown = h.post(f"/approvals/{approval['id']}", json={"approve": True, "arguments": {"call_9": {}}})
        assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "arguments"
        missing = h.post(f"/approvals/{approval['id']}", json={})
        assert missing.status_code == 400 and missing.json()["error"]["param"] == "approve"
        assert h.get("/approvals", params={"status": "maybe"}).status_code == 400
        assert Approval.objects.get(id=approval["id"]).status == ApprovalStatus.PENDING
        assert h.post(f"/turns/{turn['id']}/cancel").status_code == 200
    assert Approval.objects.get(id=approval["id"]).status == ApprovalStatus.DENIED, "cancelling the turn closes its approval"
