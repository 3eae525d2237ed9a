"""Recall gives a pattern of small talk two lines, not all of them (memory/context.py `_Patterns`):
the third variant of a line waits until every other candidate has had its turn."""

import pytest

from memory import embeddings
from memory.context import _Patterns, assemble
from tests.memory.helpers import conversation_with

WORK = [
    "Work was hectic, lots of meetings about rent prices.",
    "Work was fine, lots of meetings about the bridge repairs.",
    "Work was a bit dull, lots of meetings about electric scooters.",
    "Work was exhausting, lots of meetings about the council budget.",
    "Work was not bad, lots of meetings about space telescopes.",
    "Work was interesting, lots of meetings about a local election.",
]
PROMOTION = "I got promoted to team lead at the studio."


def patterns_of(*texts: str) -> _Patterns:
    patterns = _Patterns()
    for text in texts:
        patterns.add(text)
    return patterns


def test_a_third_variant_of_a_line_follows_the_pattern_of_the_two_chosen():
    assert not patterns_of(WORK[0]).repeated(WORK[1]), "one chosen line is no pattern yet"
    assert patterns_of(WORK[0], WORK[1]).repeated(WORK[2])


def test_a_fact_and_the_one_that_changes_it_are_no_pattern():
    sister = "My sister Ingrid just moved to Trondheim for her PhD."
    assert not patterns_of(sister, WORK[0]).repeated("Ingrid finished her PhD and moved back to Oslo.")
    race = "I ran the Edinburgh half marathon in one hour fifty-two."
    assert not patterns_of(race, WORK[0]).repeated("New personal best: I ran the half in one hour forty-eight.")


def test_short_lines_are_never_a_pattern():
    assert not patterns_of("That sounds hectic.", "That sounds fine.").repeated("That sounds oddly relaxing.")


@pytest.mark.django_db
def test_recall_gives_small_talk_two_lines_and_the_rest_to_other_candidates(alice):
    texts = [*WORK[:4], PROMOTION, *[f"Filler line number {i} about nothing much." for i in range(6)]]
    conversation = conversation_with(alice, texts, short_term_messages=1, recall_limit=3)

    built = assemble(conversation, query="How was work with all those meetings?", embed=embeddings.embed)

    hits = [piece.text.split("] ", 1)[1] for piece in built.pieces if piece.kind == "recalled" and piece.why["via"] == "hit"]
    assert len([text for text in hits if text in WORK]) == 2, hits
    assert PROMOTION in hits, hits
