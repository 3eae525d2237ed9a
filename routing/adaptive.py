"""Adaptive routing (opt-in per agent, routing.Policy): which model group a call goes to by its
prompt, and, past a budget's soft limit, which deployment by price.

The rules are cheap and explainable, and measured on a labelled set (bench/routing_quality.py,
bench/routing_prompts.py): the prompt's estimated tokens (the same bound admission reserves on:
characters / 3 + 8 per message), whether the request offers tools, and (`complex_by_cues`) cues in
the user's ask: a code fence, a word such as "explain", "compare", "step by step", "implement",
or three sentences or more. On that set token count alone is right 89% of the time at its best
threshold (60 tokens) and on a cliff (65% at 80, 57-59% from 100 up, 58% at the old default of
2000): short prompts that need reasoning or code look like short questions. With the cues, 98% (the held-out half too) at the
default 8000 tokens, the measured best; a decision costs ~11 µs (~50 µs for a 4,000-word prompt).
Above `complex_above_tokens`, with tools (`complex_with_tools`) or with a cue, the call goes to the
policy's `complex_group`; else to its `simple_group`; a group left blank keeps the agent's own.

Past the soft limit of any budget that applies, the cheapest usable deployment at its price for
this call's worst case is taken instead of the group's strategy: today's `fallback_model` switches
to one configured model, this picks the cheapest the group offers, every call.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from agents.providers import ProviderConfig
from budgets import spend
from routing.groups import DeploymentSpec
from routing.policy import PolicySpec

# Cues that a request needs the strong model, looked for in the user's ask (its last message up to
# the first blank line: a pasted document after it is judged by its length, not its words).
_CUES = re.compile(
    r"\b(step[- ]by[- ]step|explain|compare|comparison|why|prove|derive|design|analy[sz]e|evaluate|critique|summari[sz]e|"
    r"outline|plan|strategy|trade-?offs?|pros and cons|argue|reason(?: it)? out|walk me through|estimate|"
    r"how (?:does|would|should|can i|to)|show (?:your|the) (?:reasoning|work|calculation|steps|formula)|"
    r"implement|refactor|debug|review|write (?:a|an|unit|the) \w+|extract|rewrite this|"
    r"function|algorithm|query|script|regex|compile|api|sql|dockerfile|workflow)\b",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"[.?!](?:\s|$)")
ASK_CHARS = 1000  # the ask is read this far: a decision's cost stays bounded however long the prompt
SENTENCES = 3  # an ask of this many sentences or more is complex


def prompt_tokens(messages: list[dict]) -> int:
    return sum(len(json.dumps(m, separators=(",", ":"))) for m in messages) // 3 + 8 * len(messages)


def _ask(messages: list[dict]) -> str:
    """The user's last message up to its first blank line (at most ASK_CHARS)."""
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):  # content parts: their text
                content = " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
            return str(content or "")[:ASK_CHARS].split("\n\n", 1)[0]
    return ""


def cue(messages: list[dict]) -> str | None:
    """Why the user's ask reads as complex (a code fence, a cue word, several sentences), or None."""
    ask = _ask(messages)
    if "```" in ask:
        return "a code block"
    found = _CUES.search(ask)
    if found:
        return f"the cue '{found.group(0).lower()}'"
    sentences = len(_SENTENCE_END.findall(ask))
    if sentences >= SENTENCES:
        return f"{sentences} sentences"
    return None


def classify(spec: PolicySpec, body: dict[str, Any]) -> tuple[bool, str]:
    """(complex, why): tools (`complex_with_tools`), more estimated prompt tokens than
    `complex_above_tokens`, or (`complex_by_cues`) a cue in the user's ask make a call complex."""
    if spec.complex_with_tools and body.get("tools"):
        return True, "the request offers tools"
    messages = body.get("messages", [])
    tokens = prompt_tokens(messages)
    if tokens > spec.complex_above_tokens:
        return True, f"~{tokens} prompt tokens > {spec.complex_above_tokens}"
    if spec.complex_by_cues:
        found = cue(messages)
        if found is not None:
            return True, found
        return False, f"~{tokens} prompt tokens <= {spec.complex_above_tokens}, no complexity cue"
    return False, f"~{tokens} prompt tokens <= {spec.complex_above_tokens}"


def group_for(spec: PolicySpec, body: dict[str, Any]) -> tuple[str, str] | None:
    """(model group name, why) for this call, or None: the agent's own group (adaptive off, or the
    policy names no group for what the call is)."""
    if not spec.adaptive:
        return None
    complex_, why = classify(spec, body)
    picked = spec.complex_group if complex_ else spec.simple_group
    return (picked, f"adaptive: {why}") if picked else None


def past_soft_limit(tenant_id: object, api_key_id: object) -> bool:
    """Whether any budget that applies is used past its soft limit (reserved spend included)."""
    return any(standing.used_share >= standing.budget.soft_limit_share for standing in spend.standings(tenant_id, api_key_id))


def pricer(tenant_id: object) -> Callable[[DeploymentSpec], Decimal]:
    """A deployment's price for a nominal call (a million tokens in and out): what ranks them
    (unpriced: free, as settlement sees it)."""
    return lambda deployment: spend.cost(tenant_id, deployment.model, endpoint(deployment.base_url), 1_000_000, 1_000_000)


def endpoint(base_url: str) -> str:
    """The deployment's endpoint as ProviderConfig.endpoint names it (prices key on it)."""
    return ProviderConfig(base_url=base_url, api_key="", model="", timeout=0, connect_timeout=0).endpoint
