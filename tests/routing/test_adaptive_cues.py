"""Adaptive routing's rules without a model: the cues classifier (code, cue words, sentences) beside
the token count, measured on the labelled set in bench/routing_prompts.py (bench/routing_quality.py)."""

import pytest

from bench import routing_quality
from bench.routing_prompts import examples
from routing import adaptive
from routing.policy import NONE, PolicySpec

SPEC = PolicySpec(adaptive=True, simple_group="cheap", complex_group="strong")


def ask(text: str, **extra) -> dict:
    return {"messages": [{"role": "system", "content": "You help."}, {"role": "user", "content": text}], **extra}


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("Prove that the square root of 2 is irrational.", "the cue 'prove'"),
        ("Explain step by step how to solve 3x + 7 = 2x - 5.", "the cue 'explain'"),
        ("Fix it:\n```python\nprint(1/0)\n```", "a code block"),
        ("I have a plant. It died. I watered it daily. What went wrong?", "4 sentences"),
    ],
)
def test_a_short_prompt_with_a_complexity_cue_goes_to_the_complex_group(text, why):
    assert adaptive.group_for(SPEC, ask(text)) == ("strong", f"adaptive: {why}")


def test_a_short_prompt_without_a_cue_goes_to_the_simple_group_and_says_why():
    group, why = adaptive.group_for(SPEC, ask("What is the capital of Australia?"))
    assert group == "cheap" and why.endswith("<= 8000, no complexity cue")


def test_a_pasted_document_is_judged_by_its_ask_and_its_length_not_its_words():
    document = "Explain why. " * 200  # cue words after the blank line are the document's, not the ask's
    assert adaptive.group_for(SPEC, ask(f"What is the first word of the text below?\n\n{document}"))[0] == "cheap"
    assert adaptive.group_for(SPEC, ask(f"What is the first word?\n\n{'word ' * 30_000}"))[0] == "strong", "past 8000 tokens"


def test_tools_content_parts_and_the_cues_off():
    assert adaptive.group_for(SPEC, ask("hi", tools=[{"type": "function"}]))[0] == "strong"
    parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": "Compare Rust and Go."}]}]}
    assert adaptive.group_for(SPEC, parts)[0] == "strong"
    without = PolicySpec(adaptive=True, simple_group="cheap", complex_group="strong", complex_by_cues=False)
    assert adaptive.group_for(without, ask("Prove that the square root of 2 is irrational."))[0] == "cheap"
    assert adaptive.group_for(NONE, ask("Prove it.")) is None, "adaptive routing is opt-in"


def test_a_group_left_blank_keeps_the_agents_own():
    only_strong = PolicySpec(adaptive=True, complex_group="strong")
    assert adaptive.group_for(only_strong, ask("hi")) is None
    assert adaptive.group_for(only_strong, ask("hi", tools=[{"type": "function"}]))[0] == "strong"


def test_the_defaults_are_what_the_labelled_set_measured_best():
    """The policy's defaults (cues on, 8000 tokens) are the threshold bench/routing_quality.py chooses,
    and they route the set far better than token count alone."""
    result = routing_quality.run()
    cues, tokens = result.picks["token count + cues (+ tools)"], result.picks["token count (+ tools)"]
    assert NONE.complex_by_cues and cues.threshold == NONE.complex_above_tokens
    assert cues.accuracy >= 0.95 and cues.held_out >= 0.95 and cues.accuracy > tokens.accuracy
    assert len(examples()) >= 200
