"""The dialogue benchmark's answer words (bench/dialogue_data.py) and its strict reading of a context
(bench/dialogue_bench.py `holds`): a summary or fact holds an evidence message only if it says its answer."""

from bench import dialogue_data
from bench.dialogue_bench import holds
from memory.context import Piece

DATA = dialogue_data.load()
TEXT_OF = {message["client_id"]: message["content"] for message in DATA["messages"]}
CELLO_AND_PIANO = next(q for q in DATA["questions"] if q["id"] == "multi-cello-piano")
CELLO, PIANO = CELLO_AND_PIANO["evidence"]


def test_the_committed_json_is_what_the_module_writes():
    assert dialogue_data.build() == DATA, "run `python -m bench.dialogue_data` and commit bench/data/dialogue.json"


def test_every_answerable_question_has_answer_words_each_evidence_message_says():
    for question in DATA["questions"]:
        if question["kind"] == "adversarial":
            assert question["answer"] == [], f"{question['id']}: nothing in the history answers it"
            continue
        for client_id in question["evidence"]:
            entries = dialogue_data.answer_of(question["answer"], TEXT_OF[client_id])
            assert entries and dialogue_data.says(TEXT_OF[client_id], entries), f"{question['id']}: {client_id} says none of its answer"


def test_a_two_part_answer_splits_between_its_messages():
    assert dialogue_data.answer_of(CELLO_AND_PIANO["answer"], TEXT_OF[CELLO]) == [["cello"]]
    assert dialogue_data.answer_of(CELLO_AND_PIANO["answer"], TEXT_OF[PIANO]) == [["piano"]]


def test_an_answer_word_matches_whole_words_with_an_ending():
    assert dialogue_data.mentions("He collects Fountain  Pens.", "fountain pen")
    assert dialogue_data.mentions("I've been sleeping badly", "sleep")
    assert not dialogue_data.mentions("a house in Portobello", "Porto")
    assert not dialogue_data.mentions("she is a pharmacist", "pharmacy")


def test_the_data_check_refuses_an_answer_word_its_evidence_does_not_say():
    question = {"id": "single-cello", "answer": ["violin"]}
    try:
        dialogue_data._check_answer(question, [TEXT_OF[CELLO]])
    except AssertionError as error:
        assert "violin" in str(error)
    else:
        raise AssertionError("an answer word missing from the evidence was accepted")


def _piece(kind: str, text: str, client_ids: list[str], memory_id: str | None = None) -> Piece:
    return Piece(kind=kind, text=text, tokens=1, client_ids=client_ids, memory_id=memory_id)


def test_a_summary_from_the_evidence_that_does_not_say_the_answer_does_not_hold_it():
    summary = _piece("summary", "[2025-01-20 to 2025-02-05] Jonas talked about his hobbies and his week.", [CELLO, PIANO])

    assert not holds([summary], CELLO, CELLO_AND_PIANO, TEXT_OF, set())


def test_a_summary_or_fact_from_the_evidence_that_says_the_answer_holds_it():
    summary = _piece("summary", "[2025-01-20 to 2025-02-05] Jonas is learning the Cello on Tuesdays.", [CELLO])
    fact = _piece("recalled", "[2025-01-20, fact] Jonas learns the cello.", [CELLO], memory_id="fact-memory")

    assert holds([summary], CELLO, CELLO_AND_PIANO, TEXT_OF, set())
    assert holds([fact], CELLO, CELLO_AND_PIANO, TEXT_OF, {"message-memory"})
    assert not holds([summary], PIANO, CELLO_AND_PIANO, TEXT_OF, set()), "the cello says nothing of the piano"


def test_a_piece_that_says_the_answer_but_comes_from_elsewhere_does_not_hold_it():
    other = _piece("summary", "Jonas mentioned a cello once.", ["s27-m01"])

    assert not holds([other], CELLO, CELLO_AND_PIANO, TEXT_OF, set())


def test_the_message_itself_holds_it_in_the_window_or_recalled():
    recent = _piece("recent", TEXT_OF[CELLO], [CELLO])
    recalled = _piece("recalled", f"[2025-01-20, assistant] {TEXT_OF[CELLO]}", [CELLO], memory_id="message-memory")

    assert holds([recent], CELLO, CELLO_AND_PIANO, TEXT_OF, set())
    assert holds([recalled], CELLO, CELLO_AND_PIANO, TEXT_OF, {"message-memory"})
