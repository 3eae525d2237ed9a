"""Shared streams' rules without the stack: which requests share by default (deterministic and
stateless), and each follower's zero-cost usage written exactly once, by its own request even when
the leader's is gone, never again by the leader's."""

import asyncio
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from agents import streams
from budgets.models import SpendEntry
from routing import dedup
from routing.models import SharedUsage
from routing.policy import NONE, PolicySpec

HI = {"model": "helper", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("header", "spec", "extra", "defaults", "shared"),
    [
        (None, NONE, {"temperature": 0}, None, True),  # deterministic and stateless: shared by default
        (None, NONE, {"temperature": 0.0, "stream": True}, None, True),
        (None, NONE, {"temperature": 0.7, "seed": 42}, None, True),  # a seed asks for a reproducible answer
        (None, NONE, {}, {"temperature": 0}, True),  # the agent's default temperature counts
        (None, NONE, {"temperature": 1}, {"temperature": 0}, False),  # ... unless the request sets its own
        (None, NONE, {}, None, False),  # temperature 1 by default: independent samples
        (None, NONE, {"temperature": 1}, None, False),
        (None, PolicySpec(dedup=True), {"temperature": 1}, None, True),  # the agent's policy opts sampling in
        ("on", NONE, {"temperature": 1}, None, True),  # so does the request
        ("off", NONE, {"temperature": 0}, None, False),  # Sentinel-Dedup: off is honoured
        ("off", PolicySpec(dedup=True), {"temperature": 0}, None, False),
        (None, PolicySpec(dedup_deterministic=False), {"temperature": 0}, None, False),  # the policy turns the default off
        (None, NONE, {"temperature": 0, "conversation": str(uuid.uuid4())}, None, False),  # conversation state: never by default
        (None, PolicySpec(dedup=True), {"seed": 1, "conversation": str(uuid.uuid4())}, None, False),
    ],
)
def test_which_requests_share_a_provider_call(header, spec, extra, defaults, shared):
    assert dedup.wanted(header, spec, {**HI, **extra}, defaults) is shared


DONE = {"response": {"model": "stub-model", "usage": {"prompt_tokens": 5, "completion_tokens": 7}}}


@pytest.mark.django_db(transaction=True)
def test_a_followers_entry_is_written_once_by_its_own_request_when_the_leaders_is_gone(alice):
    turn_id = uuid.uuid4()
    shared = dedup.Shared(turn_id, uuid.uuid4(), 0.0)
    followers = [dedup.follower_id(alice.tenant.id, alice.api_key.id) for _ in range(3)]
    for follower in followers:
        dedup.attach(shared, follower, alice.agent.id)

    async def run():
        # The leader's request (its web process) is gone: nobody runs its account_when_done.
        for follower in followers:
            dedup.account_when_done(turn_id, follower)
        streams.publish(turn_id, "done", DONE)
        await asyncio.gather(*list(dedup._tasks))

    asyncio.run(run())
    entries = SpendEntry.objects.filter(tenant=alice.tenant)
    assert entries.count() == 3, "each follower's own request wrote its entry"
    assert {(e.prompt_tokens, e.completion_tokens, e.cost, e.api_key_id) for e in entries} == {(5, 7, 0, alice.api_key.id)}
    assert SharedUsage.objects.filter(turn_id=turn_id).count() == 3

    async def again():
        dedup.account_when_done(turn_id)  # the leader's, had it lived, reads every follower listed
        dedup.account_when_done(turn_id, followers[0])  # and a follower accounted twice over
        await asyncio.gather(*list(dedup._tasks))

    asyncio.run(again())
    assert entries.count() == 3, "no follower's entry is written twice"


@pytest.mark.django_db(transaction=True)
def test_the_leader_and_its_followers_accounting_at_once_write_each_entry_once(alice):
    turn_id = uuid.uuid4()
    shared = dedup.Shared(turn_id, uuid.uuid4(), 0.0)
    followers = [dedup.follower_id(alice.tenant.id, None) for _ in range(5)]
    for follower in followers:
        dedup.attach(shared, follower, alice.agent.id)

    async def run():
        dedup.account_when_done(turn_id)
        for follower in followers[:3]:  # two followers' requests are gone: the leader's accounts them
            dedup.account_when_done(turn_id, follower)
        streams.publish(turn_id, "done", DONE)
        await asyncio.gather(*list(dedup._tasks))

    asyncio.run(run())
    assert SpendEntry.objects.filter(tenant=alice.tenant, api_key__isnull=True, cost=0).count() == 5
    assert sorted(SharedUsage.objects.filter(turn_id=turn_id).values_list("follower", flat=True)) == sorted(followers)


@pytest.mark.django_db(transaction=True)
def test_keys_no_writer_can_still_need_are_pruned(alice, monkeypatch):
    old = SharedUsage.objects.create(turn_id=uuid.uuid4(), follower="stale")
    SharedUsage.objects.filter(id=old.id).update(created_at=timezone.now() - timedelta(hours=1))
    recent = SharedUsage.objects.create(turn_id=uuid.uuid4(), follower="recent")
    monkeypatch.setattr(dedup, "_pruned_at", [0.0])
    turn_id = uuid.uuid4()
    assert dedup.write_usage(turn_id, DONE["response"], [dedup.follower_id(alice.tenant.id, None)]) == 1
    assert not SharedUsage.objects.filter(id=old.id).exists(), "an hour old: pruned"
    assert SharedUsage.objects.filter(id=recent.id).exists() and SharedUsage.objects.filter(turn_id=turn_id).exists()
