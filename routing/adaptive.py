"""Adaptive routing (opt-in per agent, routing.Policy): which model group a call goes to by its
prompt, and, past a budget's soft limit, which deployment by price.

The rules are measured inputs, not a guess at meaning: the prompt's estimated tokens (the same
bound admission reserves on: characters / 3 + 8 per message) and whether the request offers
tools. Above `complex_above_tokens`, or with tools (`complex_with_tools`), the call goes to the
policy's `complex_group`; else to its `simple_group`; a group left blank keeps the agent's own.
Past the soft limit of any budget that applies, the cheapest usable deployment at its price for
this call's worst case is taken instead of the group's strategy: today's `fallback_model` switches
to one configured model, this picks the cheapest the group offers, every call.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from agents.providers import ProviderConfig
from budgets import spend
from routing.groups import DeploymentSpec
from routing.policy import PolicySpec


def prompt_tokens(messages: list[dict]) -> int:
    return sum(len(json.dumps(m, separators=(",", ":"))) for m in messages) // 3 + 8 * len(messages)


def group_for(spec: PolicySpec, body: dict[str, Any]) -> tuple[str, str] | None:
    """(model group name, why) for this call, or None: the agent's own group."""
    if not spec.adaptive:
        return None
    tokens = prompt_tokens(body.get("messages", []))
    if spec.complex_group and spec.complex_with_tools and body.get("tools"):
        return spec.complex_group, "adaptive: the request offers tools"
    if spec.complex_group and tokens > spec.complex_above_tokens:
        return spec.complex_group, f"adaptive: ~{tokens} prompt tokens > {spec.complex_above_tokens}"
    if spec.simple_group and tokens <= spec.complex_above_tokens:
        return spec.simple_group, f"adaptive: ~{tokens} prompt tokens <= {spec.complex_above_tokens}"
    return None


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
