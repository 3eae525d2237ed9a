"""Replay and fork through a live server and worker: turns recorded while the indexer and the Dreamer
change the store around them replay identically over HTTP (recall queries embedded by the worker),
and a fork answers from the forked history only."""

import httpx
import pytest
from django.core.management import call_command

from agents.models import Message, Turn
from memory.models import Summary
from tests.conftest import wait_for
from tests.memory.helpers import FILLER

pytestmark = pytest.mark.django_db(transaction=True)


def http(live_stack, actor):
    return httpx.Client(base_url=live_stack.api, headers={"Authorization": f"Bearer {actor.key}"}, timeout=60)


def indexed(conversation_id) -> bool:
    return not Message.objects.filter(conversation_id=conversation_id, embedded=False).exists()


def ask(h, content, conversation) -> str:
    body = {"model": "helper", "messages": [{"role": "user", "content": content}], "conversation": conversation}
    response = h.post("/chat/completions", json=body)
    assert response.status_code == 200, response.text
    return response.headers["Sentinel-Turn-Id"]


def test_live_turns_replay_identically_and_a_fork_answers_from_its_own_history(live_stack, alice, stub_llm, capsys):
    alice.agent.short_term_messages = 4
    alice.agent.recall_limit = 4
    alice.agent.consolidation_threshold = 400
    alice.agent.save()
    with http(live_stack, alice) as h:
        conversation = h.post("/conversations", json={"agent": "helper"}).json()["id"]
        imported = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"{FILLER[i % 8]} ({i})"} for i in range(30)]
        imported[3]["content"] = "The cabin's wifi password is blue-heron-77."
        assert h.post(f"/conversations/{conversation}/messages", json={"messages": imported}).status_code == 201
        wait_for(lambda: indexed(conversation), timeout=60, message="the import to be indexed")
        turns = []
        for number in range(20):
            question = "What is the wifi password at the cabin?" if number % 5 == 0 else f"Question number {number} about hinges."
            turns.append(ask(h, question, conversation))
            if number == 10:
                assert h.post(f"/conversations/{conversation}/consolidate").status_code == 202
                wait_for(lambda: Summary.objects.filter(conversation_id=conversation).exists(), timeout=60, message="a summary")
        wait_for(lambda: indexed(conversation), timeout=60, message="the replies to be indexed")
        reports = [h.post(f"/turns/{turn}/replay").json() for turn in turns]
        assert [r["divergences"] for r in reports] == [[]] * 20, "live turns must replay to the same request and outcome"
        assert all(r["identical"] for r in reports), [r["unreproducible"] for r in reports]
        requests = [t.events.get(kind="provider_request").payload for t in Turn.objects.filter(id__in=turns)]
        kinds = {piece["kind"] for request in requests for piece in request["context"]["pieces"]}
        assert {"recalled", "summary", "recent", "system"} <= kinds, "recall and summaries were part of what was replayed"

        forked = h.post(f"/conversations/{conversation}/fork", json={"at_turn": turns[0]})
        assert forked.status_code == 201, forked.text
        ask(h, "What did we just talk about?", forked.json()["id"])
        request = next(r for r in reversed(stub_llm.requests) if r["messages"][-1]["content"] == "What did we just talk about?")
        sent = [m["content"] for m in request["messages"][1:]]
        wifi = "What is the wifi password at the cabin?"
        assert sent[-3:] == [wifi, f"echo: {wifi}", "What did we just talk about?"], "the fork's history"
        assert "hinges" not in str(request["messages"]), "nothing said after the fork point"
    call_command("replay", "--agent", str(alice.agent.id))
    assert "21 replayed, 21 identical, 0 diverged" in capsys.readouterr().out
