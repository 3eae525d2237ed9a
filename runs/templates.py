"""Step templates: `{{input}}` and `{{steps.<id>.output}}`, nothing else (no logic, no escaping).

Parsed at submission (every reference must name a step the template's step depends on, directly or
not), rendered when the step starts, from the checkpointed outputs of the steps it waited for.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

REFERENCE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
STEP_OUTPUT = re.compile(r"^steps\.([A-Za-z0-9_-]{1,64})\.output$")


class TemplateError(ValueError):
    """A reference that is neither `input` nor `steps.<id>.output`."""


def references(template: str) -> set[str]:
    """The step ids a template reads the output of; TemplateError for anything it cannot read."""
    found = set()
    for match in REFERENCE.finditer(template):
        name = match.group(1)
        if name == "input":
            continue
        step = STEP_OUTPUT.match(name)
        if step is None:
            raise TemplateError(f"unknown template reference `{{{{{name}}}}}`: use {{{{input}}}} or {{{{steps.<id>.output}}}}")
        found.add(step.group(1))
    return found


def render(template: str, input_text: str, outputs: Mapping[str, str]) -> str:
    def value(match: re.Match) -> str:
        name = match.group(1)
        if name == "input":
            return input_text
        step = STEP_OUTPUT.match(name)
        return outputs.get(step.group(1), "") if step else match.group(0)

    return REFERENCE.sub(value, template)


def is_bare_input(template: str) -> bool:
    """The template is the run's input and nothing else: an agent step then gets the input's
    messages as they came (a conversation's roles kept), not their text flattened."""
    match = REFERENCE.fullmatch(template.strip())
    return match is not None and match.group(1) == "input"


def input_text(value: Any) -> str:
    """A run's input as text: itself, or its messages' contents, one per line."""
    if isinstance(value, str):
        return value
    return "\n".join(str(message.get("content") or "") for message in value if isinstance(message, dict))
