"""Memory work is fair across tenants: indexing shares each batch, consolidations are bounded per
tenant, and query embeddings bypass the bulk work entirely."""

import json
import threading
import time
import uuid

import pytest
from django.test import Client

from agents.models import Conversation, Message
from memory import api, embeddings, indexing, limits, remote
from memory.tasks import consolidate
from sentinel_site.errors import classify
from sentinel_site.redis import sync_client
from tests.conftest import make_actor
from tests.memory.helpers import FILLER

pytestmark = pytest.mark.django_db


def pending(actor, count, *, content="backlog"):
    conversation = Conversation.objects.create(tenant=actor.tenant, agent=actor.agent, last_seq=1)
    return Message.objects.bulk_create(
        Message(tenant=actor.tenant, conversation=conversation, seq=1, index=i, role="user", content=f"{content} {i}") for i in range(count)
    )


def test_a_tenants_fresh_message_is_indexed_in_the_next_batch_despite_another_tenants_backlog(alice, bob):
    pending(alice, 40)  # an import that arrived first
    (fresh,) = pending(bob, 1, content="Remember that my train leaves at nine.")
    indexed = indexing.index_pending_messages(limit=8)
    fresh.refresh_from_db()
    assert fresh.embedded, "bob's message waits one batch at most, whatever alice's backlog"
    assert indexed == 5, "alice keeps her share of the batch (4 of 8), bob takes only what he has"
    assert Message.objects.filter(tenant=alice.tenant, embedded=True).count() == 4


def test_one_tenant_alone_still_fills_whole_batches_oldest_first(alice):
    messages = pending(alice, 12)
    assert indexing.index_pending_messages(limit=8) == 8
    assert set(Message.objects.filter(embedded=True).values_list("id", flat=True)) == {m.id for m in messages[:8]}


def test_many_tenants_share_a_batch_and_none_is_skipped(alice, bob):
    carol, dave = make_actor("carol"), make_actor("dave")
    for actor in (alice, bob, carol, dave):
        pending(actor, 5)
    ids = indexing.fair_batch(8)
    assert len(ids) == 8
    per_tenant = Message.objects.filter(id__in=ids).values_list("tenant_id", flat=True)
    assert sorted(list(per_tenant).count(actor.tenant.id) for actor in (alice, bob, carol, dave)) == [2, 2, 2, 2]


@pytest.fixture
def private_queues(monkeypatch):
    """Keep this test's memory work from the live stack's worker, if the session started one: query
    requests go to a list of this test's own, and consolidations stay here (the broker is the edge)."""
    monkeypatch.setattr(remote, "REQUESTS_KEY", f"{remote.REQUESTS_KEY}:{uuid.uuid4().hex}")
    queued = []
    monkeypatch.setattr(api.consolidate_task, "apply_async", lambda *args, **kwargs: queued.append(kwargs))
    return queued


def consolidate_url(conversation):
    return f"/v1/conversations/{conversation.id}/consolidate"


def test_consolidations_are_bounded_per_conversation_and_per_tenant(alice, bob, settings, private_queues):
    settings.SENTINEL = {**settings.SENTINEL, "CONSOLIDATIONS_PER_TENANT": 2}
    client = Client()
    first, second, third = (Conversation.objects.create(tenant=alice.tenant, agent=alice.agent) for _ in range(3))
    assert client.post(consolidate_url(first), **alice.auth).status_code == 202
    again = client.post(consolidate_url(first), **alice.auth)
    assert again.status_code == 409 and again.json()["error"]["code"] == "consolidation_in_progress"
    assert client.post(consolidate_url(second), **alice.auth).status_code == 202
    refused = client.post(consolidate_url(third), **alice.auth)
    assert refused.status_code == 429, refused.content
    assert refused.json()["error"]["code"] == "too_many_consolidations" and int(refused["Retry-After"]) > 0
    assert "2 consolidations" in refused.json()["error"]["message"]
    theirs = Conversation.objects.create(tenant=bob.tenant, agent=bob.agent)
    assert client.post(consolidate_url(theirs), **bob.auth).status_code == 202, "alice's burst does not refuse bob"
    assert client.post(consolidate_url(third), **alice.auth, QUERY_STRING="dry_run=true").status_code == 200, "a dry run queues nothing"
    assert [q["kwargs"]["tenant_id"] for q in private_queues] == [str(alice.tenant.id)] * 2 + [str(bob.tenant.id)]


def test_a_consolidation_that_ran_frees_its_slot(alice, settings):
    settings.SENTINEL = {**settings.SENTINEL, "CONSOLIDATIONS_PER_TENANT": 1}
    conversation, other = (Conversation.objects.create(tenant=alice.tenant, agent=alice.agent) for _ in range(2))
    slot = limits.take(alice.tenant.id, conversation.id)
    with pytest.raises(limits.TenantBusy):
        limits.take(alice.tenant.id, other.id)
    consolidate(str(conversation.id), tenant_id=str(alice.tenant.id), slot=slot)  # the task, run here: nothing to do
    limits.release(alice.tenant.id, other.id, limits.take(alice.tenant.id, other.id))


def test_a_slot_whose_task_died_expires(alice, settings):
    settings.SENTINEL = {**settings.SENTINEL, "CONSOLIDATIONS_PER_TENANT": 1, "DREAMER_LEASE_SECONDS": 1}
    limits.take(alice.tenant.id, "c1")  # never released: its worker died
    with pytest.raises(limits.TenantBusy):
        limits.take(alice.tenant.id, "c2")
    time.sleep(1.1)
    limits.take(alice.tenant.id, "c2")


def test_waiting_query_requests_are_answered_in_one_batch_and_stale_ones_dropped(settings, private_queues):
    settings.SENTINEL = {**settings.SENTINEL, "EMBED_QUERY_TIMEOUT": 5.0}
    client = sync_client()
    stale = json.dumps({"texts": ["nobody waits"], "reply": "sentinel:embed-reply:stale", "deadline": time.time() - 1})
    client.rpush(remote.REQUESTS_KEY, stale)
    answers = {}

    def ask(text):
        answers[text] = remote.embed_texts_sync([text], "a tenant")

    askers = [threading.Thread(target=ask, args=(text,)) for text in FILLER[:2]]
    for asker in askers:
        asker.start()
    while client.llen(remote.REQUESTS_KEY) < 3:
        time.sleep(0.01)
    assert json.loads(client.lindex(remote.REQUESTS_KEY, 1))["tenant"] == "a tenant", "the worker reuses vectors only within it"
    assert remote.serve_once() == 2, "both live requests in one call, the stale one dropped"
    for asker in askers:
        asker.join(5)
    assert answers[FILLER[0]][0] == pytest.approx(embeddings.embed_query([FILLER[0]])[0], abs=1e-5)
    assert not client.exists("sentinel:embed-reply:stale")


def test_a_query_the_worker_cannot_embed_is_a_503_at_once(settings, monkeypatch, private_queues):
    settings.SENTINEL = {**settings.SENTINEL, "EMBED_QUERY_TIMEOUT": 30.0}

    def broken(texts, tenants):
        raise RuntimeError("the model fell over")

    monkeypatch.setattr(embeddings, "embed_query", broken)
    server = threading.Thread(target=remote.serve_once, kwargs={"block_seconds": 5})
    server.start()
    with pytest.raises(Exception) as raised:
        remote.embed_texts_sync(["anything"], "a tenant")
    server.join(5)
    error = classify(raised.value)  # how the client sees the domain error (sentinel_site/errors.py)
    assert error.status == 503 and error.code == "embeddings_unavailable"
