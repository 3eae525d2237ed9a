"""An agent's routing policy as the hot path reads it: a frozen spec, cached per process."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from routing.models import Policy
from sentinel_site import config_cache


@dataclass(frozen=True)
class PolicySpec:
    dedup: bool = False
    dedup_deterministic: bool = True
    cache_seconds: int = 0
    cache_always: bool = False
    cache_history: bool = False
    adaptive: bool = False
    simple_group: str = ""
    complex_group: str = ""
    complex_above_tokens: int = 8000  # the measured best with cues on (bench/routing_quality.py)
    complex_with_tools: bool = True
    complex_by_cues: bool = True


NONE = PolicySpec()


def for_agent(agent_id: uuid.UUID) -> PolicySpec:
    """The agent's policy, or NONE (kept in the cache too: most agents have no row)."""
    return config_cache.get("routing_policy", agent_id, lambda: _load(agent_id))


def _load(agent_id: uuid.UUID) -> PolicySpec:
    row = Policy.objects.filter(agent_id=agent_id).first()
    if row is None:
        return NONE
    return PolicySpec(
        row.dedup,
        row.dedup_deterministic,
        row.cache_seconds,
        row.cache_always,
        row.cache_history,
        row.adaptive,
        row.simple_group,
        row.complex_group,
        row.complex_above_tokens,
        row.complex_with_tools,
        row.complex_by_cues,
    )
