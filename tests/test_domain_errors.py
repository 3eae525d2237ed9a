"""Domain errors, mapped once (sentinel_site/errors.py): every refusal a domain module makes comes
out with the status, body and headers it always had, byte for byte, and a budget exhausted mid-turn
is Sentinel's own refusal, not a provider's error."""

import ast
import json
import re
import uuid
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync
from django.http import JsonResponse
from django.test import Client
from django.utils import timezone

from agents import admission, backpressure, outcomes, providers, runner
from agents.models import Agent, Conversation, DeadLetter, Message, TurnStatus
from budgets import spend
from budgets.models import Budget, Price, Reservation
from memory import forget, limits, remote
from sentinel_site import config_cache
from sentinel_site.errors import classify
from sentinel_site.redis import sync_client
from tests.agents.test_turn_runner import admit_turn, run

pytestmark = pytest.mark.django_db

BASE_DIR = Path(__file__).resolve().parent.parent


def refusal(call):
    """The response a client gets for what `call` raises."""
    with pytest.raises(Exception) as raised:
        call()
    error = classify(raised.value)
    assert error is not None, f"{type(raised.value).__name__} has no response: map it in sentinel_site/errors.py"
    return error.response()


def assert_refusal(response, status, message, *, type="invalid_request_error", param=None, code, headers=None):
    """Status and body byte for byte; the error's own headers exactly (middleware adds others over HTTP)."""
    body = {"error": {"message": message, "type": type, "param": param, "code": code}}
    assert response.status_code == status, response.content
    assert response.content == JsonResponse(body).content, response.content
    own = {name: value for name, value in response.items() if name in ("Retry-After", "WWW-Authenticate", "Location")}
    assert own == (headers or {}), own


def consolidate(actor, conversation):
    return Client().post(f"/v1/conversations/{conversation.id}/consolidate", **actor.auth)


def test_an_unknown_model(alice):
    assert_refusal(
        refusal(lambda: admit_turn(alice, model="nobody")),
        404,
        "The model `nobody` does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
    )


def test_an_idempotency_key_reused_with_another_body(alice):
    def admit(content):
        data = {"model": alice.agent.name, "messages": [{"role": "user", "content": content}]}
        return admission.admit(tenant=alice.tenant, api_key=alice.api_key, data=data, idempotency_key="k-1", enqueue=lambda turn_id: None)

    admit("first")
    assert_refusal(
        refusal(lambda: admit("second")),
        422,
        "This Idempotency-Key was already used with a different request body.",
        code="idempotency_key_reused",
    )


def test_an_unknown_conversation(alice):
    assert_refusal(
        refusal(lambda: admit_turn(alice, conversation=uuid.uuid4())),
        404,
        "No such conversation.",
        param="conversation",
        code="conversation_not_found",
    )


def test_a_conversation_of_another_agent(alice):
    other = Agent.objects.create(tenant=alice.tenant, name="other")
    conversation = Conversation.objects.create(tenant=alice.tenant, agent=other)
    assert_refusal(
        refusal(lambda: admit_turn(alice, conversation=conversation.id)),
        400,
        "This conversation belongs to the agent `other`, not `helper`.",
        param="conversation",
        code="conversation_agent_mismatch",
    )


def test_an_input_larger_than_the_context_budget(alice):
    alice.agent.context_budget = 50
    alice.agent.save()
    response = refusal(lambda: admit_turn(alice, "word " * 400))
    message = json.loads(response.content)["error"]["message"]
    assert re.fullmatch(
        r"This agent's context budget is 50 tokens\. However, your messages resulted in \d+ tokens \(with the agent's "
        r"system prompt\)\. Please reduce the length of the messages\.",
        message,
    ), message
    assert_refusal(response, 400, message, param="messages", code="context_length_exceeded")


def test_an_unpriced_model_the_deployment_pays_for(alice, settings):
    settings.SENTINEL = {**settings.SENTINEL, "UNPRICED_MODELS": "refuse"}
    config_cache.clear()
    assert_refusal(
        refusal(lambda: admit_turn(alice)),
        400,
        "The model `stub-model` has no price on this deployment, so its cost cannot be budgeted; an operator must price it.",
        param="model",
        code="model_not_priced",
    )


def over_budget(actor):
    Price.objects.create(model="stub-model", input_per_mtok=Decimal(1000), output_per_mtok=Decimal(1000))
    config_cache.clear()
    Budget.objects.filter(tenant=actor.tenant).update(limit=Decimal("0.01"))


def test_an_admission_over_budget(alice):
    over_budget(alice)
    response = refusal(lambda: admit_turn(alice))
    message = json.loads(response.content)["error"]["message"]
    matched = re.fullmatch(
        r"The (daily|monthly) budget of this tenant \(\$0\.010000\) is exhausted\. It resets in (\d+) seconds\.", message
    )
    assert matched, message
    assert_refusal(response, 503, message, type="budget_exceeded", code="budget_exceeded", headers={"Retry-After": matched.group(2)})


def test_a_full_turn_queue(settings):
    settings.SENTINEL = {**settings.SENTINEL, "MAX_QUEUED_TURNS": 2, "SHED_RETRY_AFTER": 7}
    broker = sync_client()
    broker.delete(backpressure.TURN_QUEUE)
    broker.rpush(backpressure.TURN_QUEUE, "a", "b")
    try:
        response = refusal(async_to_sync(backpressure.check_turn_queue))
    finally:
        broker.delete(backpressure.TURN_QUEUE)
    assert_refusal(
        response, 503, "Sentinel is overloaded (2 turns waiting); retry shortly.", type="overloaded", code="queue_full",
        headers={"Retry-After": "7"},
    )  # fmt: skip


def test_query_embeddings_nobody_answers(settings, monkeypatch):
    settings.SENTINEL = {**settings.SENTINEL, "EMBED_QUERY_TIMEOUT": 0.1}
    monkeypatch.setattr(remote, "REQUESTS_KEY", f"{remote.REQUESTS_KEY}:{uuid.uuid4().hex}")  # no worker serves this list
    assert_refusal(
        refusal(lambda: remote.embed_texts_sync(["anything"], None)),
        503,
        "The embedding service did not answer in time; try again.",
        type="server_error",
        code="embeddings_unavailable",
        headers={"Retry-After": "2"},
    )


def test_a_second_consolidation_of_one_conversation(alice):
    conversation = Conversation.objects.create(tenant=alice.tenant, agent=alice.agent)
    slot = limits.take(alice.tenant.id, conversation.id)
    try:
        assert_refusal(
            consolidate(alice, conversation),
            409,
            "This conversation is being consolidated already; its summaries appear when that has finished.",
            code="consolidation_in_progress",
            headers={"Retry-After": "15"},
        )
    finally:
        limits.release(alice.tenant.id, conversation.id, slot)


def test_a_consolidation_while_the_dreamer_holds_the_conversation(alice):
    conversation = Conversation.objects.create(
        tenant=alice.tenant, agent=alice.agent, consolidation_lease=timezone.now() + timedelta(minutes=5)
    )
    assert_refusal(
        consolidate(alice, conversation),
        409,
        "This conversation is being consolidated already; its summaries appear when that has finished.",
        code="consolidation_in_progress",
        headers={"Retry-After": "15"},
    )


def test_a_tenant_with_every_consolidation_slot_taken(alice, settings):
    settings.SENTINEL = {**settings.SENTINEL, "CONSOLIDATIONS_PER_TENANT": 1}
    first, second = (Conversation.objects.create(tenant=alice.tenant, agent=alice.agent) for _ in range(2))
    slot = limits.take(alice.tenant.id, first.id)
    try:
        assert_refusal(
            consolidate(alice, second),
            429,
            "Your tenant already has 1 consolidations queued or running; retry when one has finished.",
            type="rate_limit_error",
            code="too_many_consolidations",
            headers={"Retry-After": "15"},
        )
    finally:
        limits.release(alice.tenant.id, first.id, slot)


def test_forgetting_a_message_the_conversation_does_not_hold(alice):
    conversation = Conversation.objects.create(tenant=alice.tenant, agent=alice.agent)
    assert_refusal(
        refusal(lambda: forget.forget_message(conversation, uuid.uuid4(), actor="test")),
        404,
        "No such message.",
        code="not_found",
    )


def test_forgetting_a_message_of_a_turn_still_to_run(alice):
    turn = admit_turn(alice, "remember me")
    message = Message.objects.get(turn=turn)
    assert_refusal(
        refusal(lambda: forget.forget_message(turn.conversation, message.id, actor="test")),
        409,
        "A turn of this conversation is running or waiting to run with this message; forget it when the turn has finished.",
        code="turn_in_progress",
    )


# --- a budget exhausted mid-turn -------------------------------------------------------------------
def exhausted_after_admission(actor):
    """A turn admitted, then its reservation gone and its tenant out of money: the runner's own check refuses it."""
    turn = admit_turn(actor)
    for held in Reservation.objects.filter(turn=turn, status=Reservation.Status.HELD):
        spend.release(held.id)
    over_budget(actor)
    return turn


def test_a_budget_exhausted_mid_turn_is_sentinels_refusal_not_a_provider_error(alice):
    turn = exhausted_after_admission(alice)
    recorder = runner.claim(turn.id)
    config = providers.ProviderConfig.for_agent(turn.agent)
    with pytest.raises(Exception) as raised:
        runner.hold_budget(recorder.turn, config, {"model": "stub-model", "max_tokens": 100, "messages": []}, 10)
    assert not isinstance(raised.value, providers.ProviderError), "the provider was never called: its error type would lie"
    assert isinstance(raised.value, outcomes.Refused)
    assert raised.value.retryable is False and raised.value.code == "budget_exceeded"


def test_a_turn_whose_budget_ran_out_fails_as_budget_exceeded(alice, stub_llm):
    turn = exhausted_after_admission(alice)
    run(turn)
    turn.refresh_from_db()
    assert turn.status == TurnStatus.FAILED
    assert set(turn.error) == {"status", "type", "code", "message"}, turn.error
    assert (turn.error["status"], turn.error["type"], turn.error["code"]) == (503, "budget_exceeded", "budget_exceeded")
    assert re.fullmatch(r"The (daily|monthly) budget of this tenant \(\$0\.010000\) is exhausted\.", turn.error["message"]), turn.error
    assert turn.events.get(kind="provider_error").payload == turn.error
    assert turn.events.get(kind="failed").payload == {"code": "budget_exceeded"}
    assert stub_llm.requests == [], "refused before the call"
    assert not DeadLetter.objects.filter(turn_id=turn.id).exists(), "a refusal is not re-drivable"


# --- the rule ------------------------------------------------------------------------------------
DOMAIN_MODULES = [
    "agents/admission.py",
    "agents/backpressure.py",
    "agents/outcomes.py",
    "agents/runner.py",
    "agents/supervisor.py",
    "agents/turns.py",
    "budgets/audit.py",
    "budgets/spend.py",
    "memory/context.py",
    "memory/dreamer.py",
    "memory/forget.py",
    "memory/limits.py",
    "memory/remote.py",
    "sentinel_site/egress.py",
]
HTTP_ERRORS = {"ApiError", "not_found"}


@pytest.mark.parametrize("path", DOMAIN_MODULES)
def test_a_domain_module_raises_no_http_error(path):
    tree = ast.parse((BASE_DIR / path).read_text())
    used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    used |= {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    used |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names}
    assert not used & HTTP_ERRORS, f"{path} builds HTTP errors: raise a domain exception and map it in sentinel_site/errors.py"
