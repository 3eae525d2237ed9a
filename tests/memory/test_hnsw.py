"""Which memories the HNSW index holds (memory/hnsw.py): a tenant's once one of its scopes outgrew the
exact scan, written in by the indexer and moved in by the indexing pass; a search past the bound
finds what the index holds and what it does not hold yet alike."""

import pytest
from django.db import connection, transaction
from django.db.migrations.executor import MigrationExecutor

from agents.models import Conversation, Message
from memory import embeddings, hnsw, search, search_sql, tasks
from memory.asof import AsOf
from memory.models import HnswTenant, Memory
from tests.memory.helpers import FILLER, conversation_with
from tests.memory.test_hybrid_search import BEAGLE, GOLDFISH, REVENUE

pytestmark = pytest.mark.django_db

FACTS = [*REVENUE, GOLDFISH, BEAGLE, *FILLER]


@pytest.fixture(autouse=True)
def forget_named(monkeypatch):
    """Each test starts with no tenant named by this process (`hnsw._named` outlives a test's database)."""
    monkeypatch.setattr(hnsw, "_named", {})


def past_the_bound(settings, bound: int = 3) -> None:
    settings.SENTINEL = {**settings.SENTINEL, "EXACT_SEARCH_MAX": bound}
    search._scope_verdicts.clear()


def in_index(**filters) -> list[bool]:
    return list(Memory.objects.filter(**filters).order_by("created_at").values_list("in_hnsw", flat=True))


def add_messages(actor, texts: list[str]) -> Conversation:
    """More messages of the actor's agent, indexed by the indexer's SQL lane."""
    return conversation_with(actor, texts)


def test_a_tenant_whose_scopes_stay_within_the_bound_writes_nothing_into_the_index(alice, settings):
    conversation = conversation_with(alice, FACTS)
    vector = embeddings.embed(["Which dog breed did we get?"])[0]
    search.hybrid(alice.tenant.id, vector, "Which dog breed did we get?", k=3, agent_id=conversation.agent_id)
    search.search(alice.tenant.id, vector, k=3)
    assert set(in_index(tenant=alice.tenant)) == {False}
    assert not HnswTenant.objects.exists()
    assert hnsw.admit() == 0


@pytest.mark.parametrize("lane", ["sql", "orm"])
def test_a_search_past_the_bound_names_its_tenant_and_its_new_memories_enter_the_index(alice, bob, settings, lane):
    settings.SENTINEL = {**settings.SENTINEL, "SEARCH_READS": lane}
    conversation = conversation_with(alice, FACTS)
    conversation_with(bob, FACTS)
    past_the_bound(settings)
    vector = embeddings.embed(["Which dog breed did we get?"])[0]
    hits = search.hybrid(alice.tenant.id, vector, "Which dog breed did we get?", k=3, agent_id=conversation.agent_id)
    assert BEAGLE in [hit.memory.text for hit in hits], "found though the index holds none of them yet"
    assert list(HnswTenant.objects.values_list("tenant_id", flat=True)) == [alice.tenant.id]

    add_messages(alice, ["A new line for alice."])
    add_messages(bob, ["A new line for bob."])
    assert in_index(tenant=alice.tenant, text="A new line for alice.") == [True], "written into the index as the indexer wrote it"
    assert in_index(tenant=bob.tenant, text="A new line for bob.") == [False], "bob's scopes never outgrew the bound"


def test_the_indexing_pass_moves_a_named_tenant_s_earlier_memories_in_a_batch_at_a_time(alice, bob):
    conversation_with(alice, FACTS)
    conversation_with(bob, FACTS)
    HnswTenant.objects.create(tenant=alice.tenant)
    waiting = len(FACTS)
    assert hnsw.admit(limit=5) == 5
    assert in_index(tenant=alice.tenant).count(True) == 5
    assert hnsw.admit(limit=100) == waiting - 5
    assert hnsw.admit() == 0
    assert set(in_index(tenant=alice.tenant)) == {True}
    assert set(in_index(tenant=bob.tenant)) == {False}, "another tenant's memories stay out"


def test_the_indexing_task_moves_them_in_between_new_work(alice):
    conversation_with(alice, FACTS)
    HnswTenant.objects.create(tenant=alice.tenant)
    tasks.index_memories()
    assert set(in_index(tenant=alice.tenant)) == {True}


def test_naming_a_tenant_asks_for_an_indexing_pass_once(alice, settings, monkeypatch):
    asked = []
    monkeypatch.setattr(tasks, "schedule_indexing", lambda: asked.append(1))
    hnsw.want(alice.tenant.id)
    hnsw.want(alice.tenant.id)
    monkeypatch.setattr(hnsw, "_named", {})  # another process, or this one a minute later
    hnsw.want(alice.tenant.id)
    assert asked == [1] and HnswTenant.objects.count() == 1


@pytest.mark.parametrize("held", ["none", "some", "all"])
def test_a_search_past_the_bound_finds_the_same_memories_whatever_the_index_holds(alice, settings, held):
    conversation = conversation_with(alice, FACTS)
    question = "Which dog breed did we get?"
    vector = embeddings.embed([question])[0]
    exact_hybrid = [hit.memory.id for hit in search.hybrid(alice.tenant.id, vector, question, k=4, agent_id=conversation.agent_id)]
    exact_nearest = [hit.memory.id for hit in search.search(alice.tenant.id, vector, k=4)]
    ids = list(Memory.objects.filter(tenant=alice.tenant).order_by("created_at").values_list("id", flat=True))
    chosen = {"none": [], "some": ids[::2], "all": ids}[held]
    Memory.objects.filter(id__in=chosen).update(in_hnsw=True)
    past_the_bound(settings)
    # So few rows: the index's answers are exact here, as the scan's, whichever part holds which.
    assert [hit.memory.id for hit in search.hybrid(alice.tenant.id, vector, question, k=4, agent_id=conversation.agent_id)] == exact_hybrid
    assert [hit.memory.id for hit in search.search(alice.tenant.id, vector, k=4)] == exact_nearest


def test_past_the_bound_the_plan_reads_the_index_for_what_it_holds(alice, settings):
    conversation = conversation_with(alice, FACTS)
    Memory.objects.filter(tenant=alice.tenant).update(in_hnsw=True)
    question = "Which dog breed did we get?"
    condition, params = search_sql.scope(alice.tenant.id, embeddings.model_name(), agent_id=conversation.agent_id)
    params.update(text=question, k=3, depth=12, rrf=search.RRF_K, neighbours=True, common=None)
    params["vector0"] = search_sql.QueryVector(embeddings.embed([question])[0])
    with transaction.atomic(), search_sql.binding_cursor() as cursor:
        # A handful of rows: the planner would rather read them all and sort them.
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_sort = off")
        cursor.execute("EXPLAIN " + search._statement(condition, 1, False, "ts_rank"), params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "memory_embedding_hnsw" in plan, plan


def test_a_replay_s_search_names_no_tenant(alice, settings):
    conversation = conversation_with(alice, FACTS)
    past_the_bound(settings)
    vector = embeddings.embed(["Which dog breed did we get?"])[0]
    search.hybrid(alice.tenant.id, vector, "dog", k=3, agent_id=conversation.agent_id, as_of=AsOf(at=conversation.created_at))
    assert not HnswTenant.objects.exists()


def test_with_hnsw_all_every_memory_enters_the_index(alice, bob, settings):
    settings.SENTINEL = {**settings.SENTINEL, "HNSW": "all"}
    conversation_with(alice, FACTS)
    assert set(in_index(tenant=alice.tenant)) == {True}, "the indexer writes every memory into it"
    conversation = Conversation.objects.create(tenant=bob.tenant, agent=bob.agent, last_seq=1)
    message = Message.objects.create(tenant=bob.tenant, conversation=conversation, seq=1, index=0, role="user", content="Hi there")
    Memory.objects.create(
        tenant=bob.tenant, agent=bob.agent, conversation=conversation, kind="message", message=message, text="Hi there",
        source_message_ids=[message.id], embedding=embeddings.embed(["Hi there"])[0], embedding_model=embeddings.model_name(),
    )  # fmt: skip
    assert hnsw.admit() == 1, "and the pass moves in what other writers wrote, for every tenant"
    assert set(in_index(tenant=bob.tenant)) == {True}


def test_a_tenant_deleted_takes_its_name_with_it(alice):
    HnswTenant.objects.create(tenant=alice.tenant)
    alice.tenant.delete()
    assert not HnswTenant.objects.exists()


# --- upgrading -----------------------------------------------------------------------------------
BEFORE = ("memory", "0008_embedding_cache_per_tenant")
AFTER = ("memory", "0009_hnsw_for_large_tenants")


@pytest.mark.django_db(transaction=True)
def test_the_upgrade_keeps_every_memory_already_written_in_the_index(alice):
    conversation = conversation_with(alice, FACTS[:4])
    executor = MigrationExecutor(connection)
    try:
        executor.migrate([BEFORE])
        old = executor.loader.project_state([BEFORE]).apps.get_model("memory", "Memory")
        assert old.objects.count() == 4
        MigrationExecutor(connection).migrate([AFTER])
        assert set(in_index(tenant=alice.tenant)) == {True}
        add_messages(alice, ["Written after the upgrade."])
        assert in_index(text="Written after the upgrade.") == [False]
        with connection.cursor() as cursor:
            cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'memory_embedding_hnsw'")
            assert "WHERE in_hnsw" in cursor.fetchone()[0]
        assert conversation.id
    finally:
        MigrationExecutor(connection).migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
