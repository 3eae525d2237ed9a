"""Hybrid search's two read lanes (SENTINEL_SEARCH_READS): the hand-written scope with light rows
(memory/search_sql.py) finds the very hits the ORM's lane finds (ids, order, ranks, scores, via/of and
the memories' fields) over the shapes a search takes, in one statement.

The sql lane sends the query vector's float32 values exactly; the ORM lane's text literal rounds each
to 7 significant digits. So each case runs twice: with vectors already so rounded (both lanes search
the same vector: everything must be equal, scores to the last bit), and with the vectors as embedded
(everything equal but the similarities, which may move by about 1e-8)."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from agents.models import Agent, Conversation, Message
from memory import embeddings, search
from memory.asof import AsOf
from memory.context import assemble
from memory.models import Memory, Summary
from memory.search_sql import FoundMemory
from tests.memory.helpers import FILLER, conversation_with
from tests.memory.test_hybrid_search import BEAGLE, GOLDFISH, REVENUE, SALES_QUESTION

pytestmark = pytest.mark.django_db

FIELDS = ("id", "conversation_id", "kind", "summary_id", "role", "text", "source_message_ids", "occurred_at", "supersedes_id")
MOVING = [
    *[f"Filler line number {i} about nothing much." for i in range(6)],
    "Guess where I am moving next month?",
    "You told me before: Reykjavik, for the new job at the aquarium.",
    *[f"Another filler line, number {i}." for i in range(6)],
]


def use_lane(settings, lane: str) -> None:
    settings.SENTINEL = {**settings.SENTINEL, "SEARCH_READS": lane}


def as_sent(vector: list[float]) -> list[float]:
    """The vector as the ORM lane's literal gives it to PostgreSQL: each value to 7 digits, as float4."""
    return [float(np.float32(float(value))) for value in search._vector_literal(vector)[1:-1].split(",")]


def described(hits: list[search.FusedHit], *, similarity: bool = True) -> list[tuple]:
    return [
        (
            *(getattr(hit.memory, name) for name in FIELDS),
            hit.via,
            hit.of,
            hit.fused_rank,
            hit.fused,
            hit.vector_rank,
            hit.similarity if similarity else None,
            hit.text_rank,
            hit.text_score,
        )
        for hit in hits
    ]


def both_lanes(settings, tenant_id, question: str, *, extra: tuple[str, ...] = (), **kwargs) -> list[search.FusedHit]:
    """The sql lane's hits, checked against the ORM lane's for the question's vector as sent and as embedded."""
    vector, *extra_vectors = embeddings.embed([question, *extra])
    for exact in (True, False):
        found = {}
        for lane in ("orm", "sql"):
            use_lane(settings, lane)
            vectors = [as_sent(v) for v in (vector, *extra_vectors)] if exact else [vector, *extra_vectors]
            found[lane] = search.hybrid(tenant_id, vectors[0], question, extra_vectors=vectors[1:], **kwargs)
        assert described(found["sql"], similarity=exact) == described(found["orm"], similarity=exact)
        similarities = [(hit.similarity or 0.0) for hit in found["sql"]]
        assert similarities == pytest.approx([(hit.similarity or 0.0) for hit in found["orm"]], abs=1e-6)
    assert all(isinstance(hit.memory, FoundMemory) for hit in found["sql"])
    assert all(isinstance(hit.memory, Memory) for hit in found["orm"])
    return found["sql"]


def fact(conversation, text: str, *, supersedes: Memory | None = None, at: datetime) -> Memory:
    """A fact the Dreamer could have written (no message or summary of its own)."""
    return Memory.objects.create(
        tenant_id=conversation.tenant_id,
        agent_id=conversation.agent_id,
        conversation=conversation,
        kind="fact",
        text=text,
        occurred_at=at,
        embedding=embeddings.embed([text])[0],
        embedding_model=embeddings.model_name(),
        fact_key="user|job",
        supersedes=supersedes,
    )


def summary_memory(conversation, text: str) -> Memory:
    sources = list(Message.objects.filter(conversation=conversation, index__lt=4))
    summary = Summary.objects.create(
        tenant_id=conversation.tenant_id, conversation=conversation, text=text, token_count=12,
        source_message_ids=[m.id for m in sources], first_seq=1, last_seq=1,
    )  # fmt: skip
    return Memory.objects.create(
        tenant_id=conversation.tenant_id, agent_id=conversation.agent_id, conversation=conversation, kind="summary",
        summary=summary, text=text, source_message_ids=summary.source_message_ids,
        embedding=embeddings.embed([text])[0], embedding_model=embeddings.model_name(),
    )  # fmt: skip


def texts_of(hits) -> list[str]:
    return [hit.memory.text for hit in hits if hit.via == ""]


# --- the same hits ----------------------------------------------------------------------------


def test_a_keyword_only_match_is_found_alike(alice, settings):
    conversation = conversation_with(alice, [*REVENUE, GOLDFISH, BEAGLE])
    hits = both_lanes(settings, conversation.tenant_id, SALES_QUESTION, k=3, agent_id=conversation.agent_id)
    goldfish = next(hit for hit in hits if hit.memory.text == GOLDFISH)
    assert goldfish.text_rank == 1 and goldfish.vector_rank is None


def test_a_meaning_only_match_is_found_alike(alice, settings):
    conversation = conversation_with(alice, [*REVENUE, GOLDFISH, BEAGLE])
    hits = both_lanes(settings, conversation.tenant_id, "Which dog breed did we get?", k=3, agent_id=conversation.agent_id)
    beagle = next(hit for hit in hits if hit.memory.text == BEAGLE)
    assert beagle.vector_rank == 1 and beagle.text_rank is None


def test_a_question_without_a_word_to_match_is_searched_by_meaning_alike(alice, settings):
    conversation = conversation_with(alice, [*REVENUE, BEAGLE])
    hits = both_lanes(settings, conversation.tenant_id, "the and of", k=3, agent_id=conversation.agent_id)
    assert hits and all(hit.text_rank is None for hit in hits)


@pytest.mark.parametrize("neighbours", [True, False])
def test_neighbours_come_alike(alice, settings, neighbours):
    conversation = conversation_with(alice, MOVING)
    hits = both_lanes(settings, conversation.tenant_id, "Where am I moving?", k=2, neighbours=neighbours, agent_id=conversation.agent_id)
    assert any(hit.via == "neighbour" for hit in hits) == neighbours


def test_a_superseding_fact_comes_with_the_hit_it_updates_and_ranks_first_alike(alice, settings):
    conversation = conversation_with(alice, FILLER)
    nurse = fact(conversation, "user, job: veterinary nurse, clinic downtown", at=datetime(2026, 1, 5, tzinfo=UTC))
    teacher = fact(conversation, "user, job: biology teacher, high school", supersedes=nurse, at=datetime(2026, 2, 10, tzinfo=UTC))
    hits = both_lanes(settings, conversation.tenant_id, "Where is the veterinary clinic I work at?", k=3, agent_id=conversation.agent_id)
    found = [(hit.memory.id, hit.via) for hit in hits]
    assert (teacher.id, "update") in found and found.index((teacher.id, "update")) < found.index((nurse.id, ""))


def test_clause_vectors_are_searched_alike(alice, settings):
    conversation = conversation_with(alice, [*REVENUE, GOLDFISH, BEAGLE])
    question = "Which dog breed did we get, and what were the sales figures of Zephyrine this quarter?"
    parts = ("Which dog breed did we get", "what were the sales figures of Zephyrine this quarter")
    hits = both_lanes(settings, conversation.tenant_id, question, extra=parts, k=3)
    assert {BEAGLE, GOLDFISH} <= set(texts_of(hits))


def test_excluded_messages_memories_and_conversations_stay_out_alike(alice, settings):
    conversation = conversation_with(alice, MOVING)
    other = conversation_with(alice, ["I am moving to Reykjavik in May.", *FILLER[:3]])
    summary = summary_memory(conversation, "They talked about moving to Reykjavik for a job at the aquarium.")
    moving = Message.objects.get(conversation=conversation, content=MOVING[7])
    guess = Memory.objects.get(conversation=conversation, text=MOVING[6])
    question = "Where am I moving?"
    scope = {"agent_id": conversation.agent_id, "k": 4}
    everything = both_lanes(settings, conversation.tenant_id, question, **scope)
    assert {MOVING[7], summary.text, "I am moving to Reykjavik in May."} <= {hit.memory.text for hit in everything}
    # Ids as UUIDs or their strings (context assembly passes both); a memory without a message (a
    # summary, a fact) is not excluded by excluding messages.
    hits = both_lanes(
        settings,
        conversation.tenant_id,
        question,
        exclude_message_ids=[moving.id],
        exclude_memory_ids=[str(guess.id)],
        exclude_conversation_ids=[str(other.id)],
        **scope,
    )
    found = {hit.memory.id for hit in hits}
    assert found and moving.memory.id not in found and guess.id not in found and summary.id in found
    assert all(hit.memory.conversation_id == conversation.id for hit in hits)


def test_agent_and_conversation_scopes_alike(alice, settings):
    conversation = conversation_with(alice, MOVING)
    alice.agent = Agent.objects.create(tenant=alice.tenant, name="other agent")
    elsewhere = conversation_with(alice, ["I am moving to Reykjavik in May.", *FILLER[:3]])
    question = "Where am I moving?"
    by_agent = both_lanes(settings, conversation.tenant_id, question, k=4, agent_id=conversation.agent_id)
    by_conversation = both_lanes(settings, conversation.tenant_id, question, k=4, conversation_id=elsewhere.id)
    tenant_wide = both_lanes(settings, conversation.tenant_id, question, k=4)
    assert {hit.memory.conversation_id for hit in by_agent} == {conversation.id}
    assert {hit.memory.conversation_id for hit in by_conversation} == {elsewhere.id}
    assert {hit.memory.conversation_id for hit in tenant_wide} == {conversation.id, elsewhere.id}


def test_another_tenants_memories_never_come_back(alice, bob, settings):
    mine = conversation_with(alice, [*REVENUE, BEAGLE])
    theirs = conversation_with(bob, [*REVENUE, BEAGLE, GOLDFISH])
    bobs = set(Memory.objects.filter(tenant=bob.tenant).values_list("id", flat=True))
    for scope in ({}, {"agent_id": mine.agent_id}, {"conversation_id": mine.id}):
        hits = both_lanes(settings, alice.tenant.id, SALES_QUESTION, k=10, **scope)
        assert hits and not {hit.memory.id for hit in hits} & bobs
    # Naming the other tenant's agent or conversation finds nothing, not theirs.
    assert both_lanes(settings, alice.tenant.id, SALES_QUESTION, k=10, agent_id=theirs.agent_id) == []
    assert both_lanes(settings, alice.tenant.id, SALES_QUESTION, k=10, conversation_id=theirs.id) == []


def test_a_replay_finds_what_was_there_then_alike(alice, settings):
    conversation = conversation_with(alice, MOVING)
    then = datetime.now(UTC)
    later = conversation_with(alice, ["I am moving to Reykjavik in May.", "Reykjavik it is, then."])
    Memory.objects.filter(conversation=later).update(created_at=then + timedelta(minutes=5))
    known = Memory.objects.get(conversation=later, text="Reykjavik it is, then.")
    question = "Where am I moving?"
    now_hits = both_lanes(settings, conversation.tenant_id, question, k=6)
    then_hits = both_lanes(settings, conversation.tenant_id, question, k=6, as_of=AsOf(at=then))
    recorded = both_lanes(settings, conversation.tenant_id, question, k=6, as_of=AsOf(at=then, known_memory_ids=frozenset({known.id})))
    assert later.id in {hit.memory.conversation_id for hit in now_hits}
    assert later.id not in {hit.memory.conversation_id for hit in then_hits}
    assert {hit.memory.id for hit in recorded if hit.memory.conversation_id == later.id} == {known.id}


def test_past_the_exact_limit_the_index_is_searched_alike(alice, settings):
    conversation = conversation_with(alice, [*REVENUE, GOLDFISH, BEAGLE, *MOVING])
    settings.SENTINEL = {**settings.SENTINEL, "EXACT_SEARCH_MAX": 3}
    hits = both_lanes(settings, conversation.tenant_id, "Which dog breed did we get?", k=3, agent_id=conversation.agent_id)
    assert BEAGLE in texts_of(hits)


# --- what it costs ----------------------------------------------------------------------------


def test_the_sql_lane_is_one_statement_and_compiles_no_queryset(alice, settings, monkeypatch):
    conversation = conversation_with(alice, MOVING)
    use_lane(settings, "sql")
    vector = embeddings.embed(["Where am I moving?"])[0]
    search.hybrid(conversation.tenant_id, vector, "Where am I moving?", k=3, agent_id=conversation.agent_id)  # counts the scope
    monkeypatch.setattr(search, "scoped_memories", None)  # the ORM's scope is not built
    with CaptureQueriesContext(connection) as queries:
        hits = search.hybrid(conversation.tenant_id, vector, "Where am I moving?", k=3, agent_id=conversation.agent_id)
    assert hits and len(queries) == 1, [query["sql"] for query in queries.captured_queries]


def test_context_assembly_is_the_same_with_either_lane(alice, settings):
    texts = [*REVENUE, GOLDFISH, BEAGLE, *MOVING, "Where am I moving, and what were the sales figures of Zephyrine?"]
    conversation = conversation_with(alice, texts, short_term_messages=2, recall_limit=4)
    built = {}
    for lane in ("orm", "sql"):
        use_lane(settings, lane)
        fresh = Conversation.objects.select_related("agent").get(id=conversation.id)
        built[lane] = (assemble(fresh, embed=embeddings.embed), assemble(fresh, embed=embeddings.embed, as_of=AsOf(at=datetime.now(UTC))))
    assert [piece for piece in built["sql"][0].pieces if piece.kind == "recalled"], "recall found something"
    assert built["sql"] == built["orm"]
