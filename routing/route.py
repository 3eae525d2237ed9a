"""A routed call: the deployment each attempt goes to, why, and where it falls back to.

`config_for_agent` is what `ProviderConfig.for_agent` asks first: an agent whose `model` names a
model group (its tenant's, or a global one) gets a RoutedConfig pointed at the deployment chosen
for its first attempt. The runner's `call_provider` then asks the Route before every attempt
(`start`: budget covered, choice recorded, call counted) and after every failure (`fall_back`):

- another deployment of the same group that has not been tried, for a failure of the deployment
  (unreachable, timeout, 429, 5xx, its key refused, its breaker open);
- else the group's chain for the failure: `context_window_fallbacks` for context_length_exceeded,
  `content_policy_fallbacks` for a content-policy refusal, `fallbacks` for the rest of the above;
- never a deployment twice in one call, and never once a token reached the client (the runner).

The RoutedConfig is switched in place to each deployment it goes to, so what the runner does with
its config after the call (settlement at the price of the model called, metrics, the breaker) is
about the deployment that answered. Before each attempt the turn's budget hold must cover that
deployment's worst case: a costlier fallback swaps the hold for a larger one (reserved before the
smaller one is released, so concurrency cannot overspend); a budget without room skips it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from django.conf import settings

from agents import providers
from agents.models import EventKind
from agents.outcomes import Refused
from agents.providers import NO_KEY, ProviderConfig, ProviderError
from budgets import spend
from routing import adaptive, groups, metrics, policy, selection
from routing.groups import DeploymentSpec, GroupSpec

_DEPLOYMENT_FAILURES = {
    "provider_unreachable",
    "provider_timeout",
    "provider_rate_limited",
    "provider_auth_failed",
    "circuit_open",
    "provider_error",
}
_CONTEXT_CODES = ("context_length_exceeded", "string_above_max_length")
_POLICY_CODES = ("content_policy_violation", "content_filter")


class RoutedConfig(ProviderConfig):
    """A ProviderConfig for the deployment a Route chose; its Route rides along (not a field, so
    code that rebuilds a plain ProviderConfig from its fields gets one, unrouted)."""

    __slots__ = ("route",)
    route: Route

    @property
    def breaker_key(self) -> str:
        return selection.breaker_key(self.route.deployment, self.tenant_id)

    def become(self, deployment: DeploymentSpec, tenant_owned: bool) -> None:
        # Frozen for everyone else: only the route moves it, between attempts.
        for name, value in _fields(deployment, tenant_owned).items():
            object.__setattr__(self, name, value)


def _fields(deployment: DeploymentSpec, tenant_owned: bool) -> dict[str, Any]:
    conf = settings.SENTINEL
    return {
        "base_url": deployment.base_url,
        "api_key": deployment.api_key or NO_KEY,
        "model": deployment.model,
        "timeout": conf["LLM_TIMEOUT"],
        "connect_timeout": conf["LLM_CONNECT_TIMEOUT"],
        "tenant_url": tenant_owned,  # a tenant's URL is egress-checked at every connection
        "deployment_key": not tenant_owned,  # a global group's calls are paid by this deployment
    }


def config_for_agent(agent: Any) -> ProviderConfig | None:
    """A RoutedConfig if the agent's model names a model group it may use, else None."""
    if not agent.model or agent.provider_base_url:
        return None
    group = groups.find(agent.tenant_id, agent.model)
    if group is None or not group.deployments:  # a group with nothing enabled routes nothing
        return None
    spec = policy.for_agent(agent.id)
    # Admission reserves for this first choice: past a soft limit, the cheapest (see Route._adapt).
    price = adaptive.pricer(agent.tenant_id) if spec.adaptive and adaptive.past_soft_limit(agent.tenant_id, None) else None
    route = Route(agent.tenant_id, group, price=price)
    return route.config


def route_of(config: ProviderConfig) -> Route | None:
    return config.route if isinstance(config, RoutedConfig) else None


class Route:
    """One call's way through a model group and its fallbacks."""

    def __init__(self, tenant_id: object, group: GroupSpec, *, price: Callable[[DeploymentSpec], Decimal] | None = None) -> None:
        self.tenant_id = tenant_id
        self.group = group
        self.tried: set[int] = set()
        self.visited: list[str] = [group.name]
        self.tries = 0
        self.call_id = ""
        self.last_error: dict | None = None
        self.latency_budget_ms: int | None = None  # Sentinel-Latency-Budget-Ms, from the turn's params
        self.price = price  # set past a soft limit (adaptive): the cheapest deployment is chosen
        # Nothing usable now: the first deployment is still the one tried (its breaker answers 503).
        self.choice = selection.choose(group, tenant_id, price=price) or selection.Choice(group.deployments[0], "no deployment available")
        self.deployment = self.choice.deployment
        self.config = RoutedConfig(**_fields(self.deployment, self._tenant_owned()), tenant_id=str(tenant_id))
        object.__setattr__(self.config, "route", self)

    def _tenant_owned(self) -> bool:
        return self.group.tenant_id is not None

    # --- before an attempt ----------------------------------------------------------------------
    def start(self, recorder: Any, body: dict) -> None:
        """Cover the attempt's worst case in the budget, record the choice, count the call. A
        deployment the budget cannot cover is skipped for the next choice; none left: Refused."""
        if self.tries == 0:
            self._adapt(recorder, body)
        while True:
            try:
                self._cover(recorder, body)
                break
            except (spend.BudgetExceeded, spend.UnpricedModel) as refusal:
                self._note(recorder, {"skipped": self.deployment.name, "group": self.group.name, "why": type(refusal).__name__})
                if not self._next(None):
                    raise Refused(refusal) from None
        body["model"] = self.deployment.model
        self.tries += 1
        self.call_id = uuid.uuid4().hex
        self._note(
            recorder,
            {
                "try": self.tries,
                "group": self.group.name,
                "deployment": self.deployment.name,
                "model": self.deployment.model,
                "reason": self.choice.reason,
                "skipped": [list(pair) for pair in self.choice.skipped],
                "after": self.last_error,
            },
        )
        selection.started(self.deployment, self.call_id)

    def _adapt(self, recorder: Any, body: dict) -> None:
        """Before the first attempt: the group the agent's adaptive policy picks for this prompt, the
        request's latency budget, and past a soft limit the cheapest deployment (routing/adaptive.py)."""
        turn = recorder.turn
        self.latency_budget_ms = turn.params.get("latency_budget_ms")
        spec = policy.for_agent(turn.agent_id)
        picked = adaptive.group_for(spec, body)
        group, why = self.group, ""
        if picked is not None and picked[0] != self.group.name:
            found = groups.find(self.tenant_id, picked[0])
            if found is not None and found.deployments:
                group, why = found, picked[1] + "; "
                self.visited.append(found.name)
        if spec.adaptive and adaptive.past_soft_limit(self.tenant_id, turn.api_key_id):
            self.price = adaptive.pricer(self.tenant_id)
        if group is self.group and self.latency_budget_ms is None and self.price is None:
            return  # nothing to adapt: the first choice stands
        choice = self._choose(group)
        if choice is not None:
            self._go(group, selection.Choice(choice.deployment, why + choice.reason, choice.skipped))

    def _choose(self, group: GroupSpec) -> selection.Choice | None:
        return selection.choose(group, self.tenant_id, self.tried, latency_budget_ms=self.latency_budget_ms, price=self.price)

    def _cover(self, recorder: Any, body: dict) -> None:
        held = recorder.reservation
        if held is None:
            return
        agent = recorder.turn.agent
        messages = body.get("messages", [])
        prompt = max(agent.context_budget, sum(len(json.dumps(m, separators=(",", ":"))) for m in messages) // 3 + 8 * len(messages))
        needed = spend.cost(
            self.tenant_id,
            self.deployment.model,
            self.config.endpoint,
            prompt + spend.request_overhead_tokens(body),
            spend.output_bound(body),
            refuse_unpriced=self.config.deployment_key,
        )
        if needed <= held.amount:
            return
        larger = spend.reserve(self.tenant_id, recorder.turn.api_key_id, needed, turn_id=recorder.turn.id)
        spend.release(held.id)
        recorder.reservation = larger

    # --- after an attempt -----------------------------------------------------------------------
    def ended(self) -> None:
        """The attempt is over, however it ended: no longer in flight (idempotent)."""
        if self.call_id:
            selection.ended(self.deployment, self.call_id)
            self.call_id = ""

    def succeeded(self, result: providers.Completion) -> None:
        tokens = (result.prompt_tokens or 0) + (result.completion_tokens or 0)
        latency_ms = result.first_token_ms or result.latency_ms
        selection.ended(self.deployment, "", tokens=tokens, latency_ms=latency_ms)
        label = metrics.deployment_label(self.group, self.deployment)
        metrics.DEPLOYMENT_CALLS.labels(label, "ok").inc()
        if latency_ms is not None:
            metrics.DEPLOYMENT_LATENCY.labels(label).observe(latency_ms / 1000)
        price = spend.cost(
            self.tenant_id, self.deployment.model, self.config.endpoint, result.prompt_tokens or 0, result.completion_tokens or 0
        )
        metrics.DEPLOYMENT_COST.labels(label).inc(float(price))

    def fall_back(self, error: ProviderError) -> bool:
        """Point the config at where the next attempt goes after this error; False: nowhere."""
        self.ended()
        metrics.DEPLOYMENT_CALLS.labels(metrics.deployment_label(self.group, self.deployment), error.code).inc()
        selection.forget(self.deployment.id)  # its breaker may have opened: read it afresh
        self.last_error = error.as_dict()
        return self._next(error)

    def _next(self, error: ProviderError | None) -> bool:
        self.tried.add(self.deployment.id)
        kind = failure_kind(error)
        if kind == "deployment":
            choice = self._choose(self.group)
            if choice is not None:
                return self._go(self.group, selection.Choice(choice.deployment, "another deployment: " + choice.reason, choice.skipped))
        chain = {
            "deployment": self.group.fallbacks,
            "context_window": self.group.context_window_fallbacks,
            "content_policy": self.group.content_policy_fallbacks,
        }.get(kind, ())
        for name in chain:
            if name in self.visited:
                continue
            self.visited.append(name)
            group = groups.find(self.tenant_id, name)
            if group is None:
                continue
            choice = self._choose(group)
            if choice is not None:
                why = f"{kind} fallback from {self.group.name}: {choice.reason}"
                return self._go(group, selection.Choice(choice.deployment, why, choice.skipped))
        return False

    def _go(self, group: GroupSpec, choice: selection.Choice) -> bool:
        self.group, self.choice, self.deployment = group, choice, choice.deployment
        self.config.become(self.deployment, self._tenant_owned())
        return True

    def _note(self, recorder: Any, payload: dict) -> None:
        recorder.record(EventKind.ROUTE, payload)


def failure_kind(error: ProviderError | None) -> str:
    """Which fallback chain an error calls for: deployment, context_window, content_policy, or ''.
    None (a deployment the budget cannot cover) is a deployment's."""
    if error is None:
        return "deployment"
    if error.code == "provider_rejected_request":
        if any(f"({code})" in error.message for code in _CONTEXT_CODES):
            return "context_window"
        if any(f"({code})" in error.message for code in _POLICY_CODES):
            return "content_policy"
        return ""
    if error.code in _DEPLOYMENT_FAILURES and (error.retryable or error.code in ("provider_auth_failed", "circuit_open")):
        return "deployment"
    return ""
