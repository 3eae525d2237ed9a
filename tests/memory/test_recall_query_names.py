"""Recall embeds the query without the conversation's speakers' names (memory/context.py
`without_names`): a message is embedded as what was said, not who said it, so a speaker's name in
the question only pulls its vector away from what that speaker said. Full text keeps the names."""

import pytest

from agents.models import Message
from memory import embeddings
from memory.context import assemble, without_names
from tests.memory.helpers import FILLER, conversation_with

pytestmark = pytest.mark.django_db

SPEAKERS = frozenset({"Mara", "Jonas"})


def named_conversation(alice, texts):
    conversation = conversation_with(alice, texts, short_term_messages=2)  # the older messages only recall can bring
    Message.objects.filter(conversation=conversation, role="user").update(name="Mara")
    Message.objects.filter(conversation=conversation, role="assistant").update(name="Jonas")
    return conversation


def test_a_speakers_name_and_its_possessive_are_left_out():
    assert without_names("What are Jonas's two hobbies?", SPEAKERS) == "What are two hobbies?"
    assert without_names("Which writers are mara and JONAS each into?", SPEAKERS) == "Which writers are and each into?"
    assert without_names("What does Jonas\u2019s cat do?", SPEAKERS) == "What does cat do?"


def test_a_longer_word_holding_a_name_is_kept():
    assert without_names("Maradona met Jonasson", SPEAKERS) == "Maradona met Jonasson"


def test_a_query_that_is_only_a_name_is_kept_whole():
    assert without_names("Jonas?", SPEAKERS) == "Jonas?"
    assert without_names("What does Jonas see?", frozenset()) == "What does Jonas see?"


def test_the_query_is_embedded_without_the_speakers_names(alice):
    conversation = named_conversation(alice, FILLER)
    embedded: list[str] = []

    def embed(texts: list[str]) -> list[list[float]]:
        embedded.extend(texts)
        return embeddings.embed(texts)

    assemble(conversation, query="What is Jonas reading, and what did Mara fix in the garden?", embed=embed)

    assert embedded, "recall embedded nothing"
    assert not [text for text in embedded if "Jonas" in text or "Mara" in text], embedded


def test_full_text_still_finds_a_message_that_names_a_speaker(alice):
    umbrella = "Jonas left his umbrella at the ferry terminal."
    conversation = named_conversation(alice, [umbrella, *FILLER])

    built = assemble(conversation, query="What did Jonas forget?", embed=embeddings.embed)

    found = [piece for piece in built.pieces if piece.kind == "recalled" and umbrella in piece.text]
    assert found and "text_rank" in (found[0].why or {}), [piece.text for piece in built.pieces]
