"""Hybrid recall: full text and vectors fused by reciprocal rank, neighbours of a hit, dated lines."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from agents.models import Message
from memory import embeddings, search
from memory.context import assemble
from tests.memory.helpers import conversation_with

pytestmark = pytest.mark.django_db

# Close in meaning to SALES_QUESTION without one of its words; GOLDFISH shares only its name.
SALES_QUESTION = "What were the sales figures of Zephyrine this quarter?"
REVENUE = [
    "The revenue report for the third period looked strong.",
    "Our earnings went up compared to last year.",
    "Turnover at the shop grew by a tenth this spring.",
    "Income from the online store doubled in March.",
    "Profits were lower than the accountant expected.",
    "The shop's monthly takings beat every forecast.",
]
GOLDFISH = (
    "While the lentil soup simmered on the stove and the rain kept drumming on the kitchen window, the goldfish got "
    "its name, Zephyrine, from my daughter who loves the wind."
)
BEAGLE = "We adopted a beagle puppy last week."


def search_for(conversation, question: str, k: int = 3) -> list[search.FusedHit]:
    vector = embeddings.embed([question])[0]
    return search.hybrid(conversation.tenant_id, vector, question, k=k, agent_id=conversation.agent_id)


def test_a_keyword_only_match_is_found_by_full_text_where_vectors_miss_it(alice):
    conversation = conversation_with(alice, [*REVENUE, GOLDFISH, BEAGLE])
    hits = search_for(conversation, SALES_QUESTION)
    found = {hit.memory.text: hit for hit in hits if hit.via == ""}
    assert GOLDFISH in found, list(found)
    assert found[GOLDFISH].text_rank == 1
    assert found[GOLDFISH].vector_rank is None, "the vector retriever's top 3 should be the revenue lines"


def test_a_meaning_only_match_is_found_by_vectors_without_a_shared_word(alice):
    conversation = conversation_with(alice, [*REVENUE, GOLDFISH, BEAGLE])
    hits = search_for(conversation, "Which dog breed did we get?")
    found = {hit.memory.text: hit for hit in hits if hit.via == ""}
    assert BEAGLE in found, list(found)
    assert found[BEAGLE].text_rank is None and found[BEAGLE].vector_rank == 1


def test_fusion_ranks_a_memory_both_retrievers_found_first(alice):
    conversation = conversation_with(alice, [*REVENUE, GOLDFISH, BEAGLE, "My goldfish Zephyrine likes the new tank."])
    hits = [hit for hit in search_for(conversation, "Is Zephyrine the goldfish happy?", k=4) if hit.via == ""]
    both = [hit for hit in hits if hit.vector_rank is not None and hit.text_rank is not None]
    one = [hit for hit in hits if hit not in both]
    assert both and one, hits
    assert [hit.fused_rank for hit in hits] == sorted(hit.fused_rank for hit in hits)
    assert min(hit.fused for hit in both) > max(hit.fused for hit in one), "found by both retrievers ranks above found by one"


def test_the_context_carries_both_kinds_of_match_and_says_why(alice):
    texts = [*REVENUE, GOLDFISH, BEAGLE, *[f"Filler line number {i} about nothing much." for i in range(8)], SALES_QUESTION]
    conversation = conversation_with(alice, texts, short_term_messages=2, recall_limit=4)
    context = assemble(conversation, embed=embeddings.embed)
    recalled = {piece.text.split("] ", 1)[1]: piece for piece in context.pieces if piece.kind == "recalled"}
    assert GOLDFISH in recalled, list(recalled)
    why = recalled[GOLDFISH].why
    assert why["via"] == "hit" and why["text_rank"] == 1 and why["fused_rank"] >= 1


def test_a_hit_brings_the_message_after_it_when_the_budget_allows(alice):
    texts = [
        *[f"Filler line number {i} about nothing much." for i in range(10)],
        "Guess where I am moving next month?",
        "You told me before: Reykjavik, for the new job at the aquarium.",
        *[f"Another filler line, number {i}." for i in range(10)],
        "Where am I moving?",
    ]
    conversation = conversation_with(alice, texts, short_term_messages=2, recall_limit=1)
    context = assemble(conversation, embed=embeddings.embed)
    recalled = [piece for piece in context.pieces if piece.kind == "recalled"]
    assert [piece.why["via"] for piece in recalled].count("neighbour") >= 1, [p.text for p in recalled]
    assert any("Reykjavik" in piece.text for piece in recalled)


def test_recalled_lines_carry_the_date_they_were_said(alice):
    conversation = conversation_with(alice, [*REVENUE, BEAGLE, "filler", "Which dog breed did we get?"], short_term_messages=1)
    said = datetime(2026, 3, 4, 18, tzinfo=UTC)
    Message.objects.filter(conversation=conversation, content=BEAGLE).update(occurred_at=said)
    from memory.models import Memory

    Memory.objects.filter(conversation=conversation, text=BEAGLE).update(occurred_at=said)
    context = assemble(conversation, embed=embeddings.embed)
    lines = context.messages[0]["content"].splitlines()
    assert f"- [2026-03-04, assistant] {BEAGLE}" in lines or f"- [2026-03-04, user] {BEAGLE}" in lines, lines
    beagle = next(piece for piece in context.pieces if piece.kind == "recalled" and BEAGLE in piece.text)
    assert beagle.date == "2026-03-04"
    assert said - timedelta(days=1) < said  # the line's date is the day it was said, not the import's


def test_a_two_part_question_is_searched_for_part_by_part(alice):
    from memory.context import clauses

    assert clauses("Which instrument does Jonas practise, and which did Mara purchase for her lounge?") == [
        "Which instrument does Jonas practise",
        "which did Mara purchase for her lounge",
    ]
    assert clauses("What is the name of my dog?") == []
    conversation = conversation_with(alice, [*REVENUE, GOLDFISH, BEAGLE])
    question = "Which dog breed did we get, and what were the sales figures of Zephyrine this quarter?"
    vectors = embeddings.embed(clauses(question))
    hits = search.hybrid(conversation.tenant_id, embeddings.embed([question])[0], question, k=3, extra_vectors=vectors)
    assert {BEAGLE, GOLDFISH} <= {hit.memory.text for hit in hits if hit.via == ""}


def test_a_line_said_many_times_takes_one_place_among_the_candidates(alice):
    repeated = "Our dog loves running on the beach."
    chewer = "The beagle chewed my slippers again."
    conversation = conversation_with(alice, [repeated] * 5 + [chewer, *REVENUE, GOLDFISH])
    hits = [hit for hit in search_for(conversation, "What does our dog love doing?", k=3) if hit.via == ""]
    texts = [hit.memory.text for hit in hits]
    assert len(texts) == len(set(texts)) == 3, texts
    assert repeated in texts and chewer in texts, texts
    from memory.models import Memory

    newest = Memory.objects.filter(conversation=conversation, text=repeated).order_by("-occurred_at", "-id").first()
    kept = next(hit for hit in hits if hit.memory.text == repeated)
    assert kept.memory.occurred_at == newest.occurred_at, "the newest copy stands for the others"


def test_full_text_ranks_a_repeated_line_once(alice):
    conversation = conversation_with(alice, [GOLDFISH] * 4 + ["Zephyrine swims in circles all day.", *REVENUE])
    hits = [hit for hit in search_for(conversation, "Zephyrine", k=2) if hit.text_rank is not None and hit.via == ""]
    assert sorted(hit.text_rank for hit in hits) == [1, 2]
    assert len({hit.memory.text for hit in hits}) == 2, [hit.memory.text for hit in hits]


def test_an_and_between_two_names_joins_the_names_not_two_clauses():
    from memory.context import clauses

    assert clauses("What endurance events have Mara and Jonas done or planned?") == []
    assert clauses("Which writers are Mara and Jonas each into, and which does Tomas read?") == [
        "Which writers are Mara and Jonas each into",
        "which does Tomas read",
    ]
    assert clauses("Where are Mara's late-summer plans and Jonas's Asian travel hopes?") == [
        "Where are Mara's late-summer plans",
        "Jonas's Asian travel hopes",
    ]


@pytest.mark.parametrize("reads", ["sql", "orm"])
@pytest.mark.parametrize("rank", ["ts_rank_cd", "ts_rank"])
def test_full_text_ranks_by_the_configured_function(alice, settings, rank, reads):
    settings.SENTINEL = {**settings.SENTINEL, "TEXT_RANK": rank, "SEARCH_READS": reads}
    conversation = conversation_with(alice, [*REVENUE, GOLDFISH, BEAGLE, "My goldfish Zephyrine likes the new tank."])
    question = "Is Zephyrine the goldfish happy in the tank?"
    hits = [hit for hit in search_for(conversation, question, k=4) if hit.text_rank is not None]
    assert len(hits) == 2, hits
    query = "replace(replace(plainto_tsquery('english', %s)::text, ' & ', ' | '), ' <-> ', ' | ')::tsquery"
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id, ts_rank_cd(search_vector, {query}), ts_rank(search_vector, {query}) FROM memory_memory WHERE id = ANY(%s)",
            [question, question, [hit.memory.id for hit in hits]],
        )
        scores = {memory_id: {"ts_rank_cd": cd, "ts_rank": plain} for memory_id, cd, plain in cursor.fetchall()}
    for hit in hits:
        assert hit.text_score == pytest.approx(scores[hit.memory.id][rank], rel=1e-5)
    assert any(abs(by["ts_rank_cd"] - by["ts_rank"]) > 1e-3 for by in scores.values()), "the two functions tell apart"
