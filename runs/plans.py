"""What a run request becomes: its steps, each with what it waits for and what it is given.

Every pattern compiles to the same thing, a DAG of steps, so the dispatcher knows one shape:
parallel and broadcast are steps with no dependencies (and an aggregating step after them when
an agent aggregates); a pipeline is a chain; a route is a `route` step and the answering step it
picks the agent of; a workflow is its own steps. A plan that cannot run is refused here, before
anything is written, naming the step and the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agents.models import Agent
from budgets.models import Tenant
from runs import templates
from runs.models import Pattern, StepKind, Workflow

MAX_STEPS = 100
INPUT = "{{input}}"


class PlanError(ValueError):
    """The request cannot run as asked; `param` is the field at fault (OpenAI's error.param)."""

    def __init__(self, message: str, param: str | None = None, code: str = "invalid_run") -> None:
        super().__init__(message)
        self.param = param
        self.code = code


@dataclass
class StepSpec:
    key: str
    kind: str
    template: str = INPUT
    agent: Agent | None = None
    agent_from: str = ""
    depends_on: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    timeout_seconds: int | None = None
    retries: int = 0
    param: str = ""  # where the step came from in the request, for errors


def resolve(tenant: Tenant, data: dict[str, Any]) -> dict[str, Any]:
    """The request with a declared workflow's name replaced by its definition (runs.models.Workflow)."""
    name = data.get("workflow")
    if not isinstance(name, str):
        return data
    declared = Workflow.objects.filter(tenant=tenant, name=name).first()
    if declared is None:
        raise PlanError(f"No workflow named `{name}` is declared for you (see `manage.py config`).", "workflow", "workflow_not_found")
    return {**data, "workflow": declared.definition}


def compile_plan(tenant: Tenant, data: dict[str, Any]) -> list[StepSpec]:
    """The steps of a validated request (runs.api.serializers.RunCreateSerializer), or PlanError."""
    pattern = data["pattern"]
    builder = {
        Pattern.PARALLEL: _parallel,
        Pattern.PIPELINE: _pipeline,
        Pattern.BROADCAST: _broadcast,
        Pattern.ROUTE: _route,
        Pattern.WORKFLOW: _workflow,
    }[pattern]
    steps = builder(tenant, data)
    if len(steps) > MAX_STEPS:
        raise PlanError(f"A run has at most {MAX_STEPS} steps; this one would have {len(steps)}.", "agents")
    check_graph(steps)
    return steps


# --- patterns --------------------------------------------------------------------------------
def _agents(tenant: Tenant, names: list[str], param: str = "agents") -> list[Agent]:
    found = {agent.name: agent for agent in Agent.objects.live().filter(tenant=tenant, name__in=set(names))}
    for index, name in enumerate(names):
        if name not in found:
            raise PlanError(f"The agent `{name}` does not exist or you do not have access to it.", f"{param}[{index}]", "agent_not_found")
    return [found[name] for name in names]


def _require_agents(data: dict[str, Any]) -> list[str]:
    names = data.get("agents") or []
    if not names:
        raise PlanError(f"A {data['pattern']} run needs `agents`: the names of your agents.", "agents")
    return names


def _unique_keys(agents: list[Agent]) -> list[str]:
    """Step keys for agents: their names, numbered from the second time one appears."""
    keys: list[str] = []
    for agent in agents:
        key, n = agent.name, 1
        while key in keys:
            n += 1
            key = f"{agent.name}_{n}"
        keys.append(key)
    return keys


def _fan_out(agents: list[Agent]) -> list[StepSpec]:
    return [StepSpec(key=key, kind=StepKind.AGENT, agent=agent, param=f"agents[{i}]") for i, (key, agent) in enumerate(
        zip(_unique_keys(agents), agents, strict=True))]  # fmt: skip


def _parallel(tenant: Tenant, data: dict[str, Any]) -> list[StepSpec]:
    steps = _fan_out(_agents(tenant, _require_agents(data)))
    aggregate = data.get("aggregate") or "concat"
    if isinstance(aggregate, dict):
        (aggregator,) = _agents(tenant, [aggregate["agent"]], "aggregate.agent")
        key, n = "aggregate", 1
        while any(step.key == key for step in steps):
            n += 1
            key = f"aggregate_{n}"
        answers = "\n\n".join(f"Answer {i + 1} ({step.key}):\n{{{{steps.{step.key}.output}}}}" for i, step in enumerate(steps))
        template = f"{INPUT}\n\nCombine these answers into one:\n\n{answers}"
        steps.append(
            StepSpec(
                key=key, kind=StepKind.AGENT, agent=aggregator, template=template, depends_on=[s.key for s in steps], param="aggregate"
            )
        )
    return steps


def _pipeline(tenant: Tenant, data: dict[str, Any]) -> list[StepSpec]:
    steps = _fan_out(_agents(tenant, _require_agents(data)))
    given = data.get("templates")
    if given is not None and len(given) != len(steps):
        raise PlanError(f"`templates` has {len(given)} entries for {len(steps)} agents: give one per agent, or none.", "templates")
    for index, step in enumerate(steps):
        if index:
            step.depends_on = [steps[index - 1].key]
            step.template = f"{{{{steps.{steps[index - 1].key}.output}}}}"
        if given is not None:
            step.template = given[index]
            step.param = f"templates[{index}]"
    return steps


def _broadcast(tenant: Tenant, data: dict[str, Any]) -> list[StepSpec]:
    if data.get("agents"):
        raise PlanError("A broadcast goes to every agent of yours (narrowed by `specialization`), not to a list: use parallel.", "agents")
    found = Agent.objects.live().filter(tenant=tenant).order_by("name")
    if data.get("specialization"):
        found = found.filter(specialization__icontains=data["specialization"])
    agents = list(found[: MAX_STEPS + 1])
    if not agents:
        raise PlanError(
            "No agent of yours matches this broadcast.", "specialization" if data.get("specialization") else "pattern", "no_agents"
        )
    steps = _fan_out(agents)
    for step in steps:
        step.param = "specialization"
        step.timeout_seconds = data.get("step_timeout_seconds")
    return steps


def _route(tenant: Tenant, data: dict[str, Any]) -> list[StepSpec]:
    if data.get("agents"):
        candidates = _agents(tenant, data["agents"])
    else:
        candidates = list(Agent.objects.live().filter(tenant=tenant).exclude(specialization="").order_by("name")[:MAX_STEPS])
    candidates = [agent for agent in candidates if agent.specialization.strip()]
    if not candidates:
        raise PlanError("A route picks among agents by their `specialization`, and none of these has one.", "agents", "no_agents")
    listed = [{"agent": agent.name, "specialization": agent.specialization} for agent in candidates]
    route = StepSpec(key="route", kind=StepKind.ROUTE, config={"candidates": listed}, param="agents")
    answer = StepSpec(key="answer", kind=StepKind.AGENT, agent_from="route", depends_on=["route"], param="agents")
    if not data.get("router"):
        return [route, answer]
    (router,) = _agents(tenant, [data["router"]], "router")
    # Its question is about the run, not part of it: kept out of a shared memory.
    asking = StepSpec(
        key="router", kind=StepKind.AGENT, agent=router, template=router_prompt(listed), config={"shared_memory": False}, param="router"
    )
    route.depends_on, route.config["router_step"] = [asking.key], asking.key
    return [asking, route, answer]


def router_prompt(candidates: list[dict[str, str]]) -> str:
    """What a router agent is asked: the candidates with their specializations, then the input."""
    lines = "\n".join(f"- {c['agent']}: {_literal(c['specialization'])}" for c in candidates)
    return (
        "Choose the agent best suited to answer the request below. Reply with the agent's name only, exactly as "
        f"listed.\n\nAgents:\n{lines}\n\nRequest:\n{INPUT}"
    )


def _literal(text: str) -> str:
    """Text put into a template as it is: braces that would read as a reference are split."""
    return text.replace("{{", "{ {").replace("}}", "} }")


AGENT_KINDS = (StepKind.AGENT, StepKind.LLM)


def _workflow(tenant: Tenant, data: dict[str, Any]) -> list[StepSpec]:
    workflow = data.get("workflow")
    if not isinstance(workflow, dict):
        raise PlanError("A workflow run needs `workflow`: an object with `steps`.", "workflow")
    specs = []
    names = [step["agent"] for step in workflow["steps"] if step.get("agent")]
    known = {agent.name: agent for agent in Agent.objects.live().filter(tenant=tenant, name__in=set(names))}
    for index, raw in enumerate(workflow["steps"]):
        param = f"workflow.steps[{index}]"
        kind = raw["kind"]
        agent = None
        if kind in AGENT_KINDS:
            if not raw.get("agent"):
                raise PlanError(f"step `{raw['id']}`: a {kind} step needs `agent`.", f"{param}.agent")
            agent = known.get(raw["agent"])
            if agent is None:
                raise PlanError(f"step `{raw['id']}`: the agent `{raw['agent']}` does not exist or you do not have access to it.",
                                f"{param}.agent", "agent_not_found")  # fmt: skip
        if kind == StepKind.TRANSFORM and not raw.get("template"):
            raise PlanError(f"step `{raw['id']}`: a transform step needs `template`.", f"{param}.template")
        config = {key: raw[key] for key in ("system", "k", "embedding", "scope_agent") if raw.get(key) is not None}
        specs.append(
            StepSpec(
                key=raw["id"],
                kind=kind,
                template=raw.get("template") or INPUT,
                agent=agent,
                depends_on=list(raw.get("depends_on") or []),
                config=config,
                timeout_seconds=raw.get("timeout_seconds"),
                retries=raw.get("retries") or 0,
                param=param,
            )
        )
    return specs


# --- the graph -------------------------------------------------------------------------------
def check_graph(steps: list[StepSpec]) -> None:
    """Unique ids, known dependencies, no cycle, and templates that read only what a step waits for."""
    by_key: dict[str, StepSpec] = {}
    for step in steps:
        if step.key in by_key:
            raise PlanError(f"step `{step.key}`: another step has this id.", f"{step.param}.id")
        by_key[step.key] = step
    for step in steps:
        for dependency in step.depends_on:
            if dependency not in by_key:
                raise PlanError(f"step `{step.key}`: depends on `{dependency}`, which is no step of this run.", f"{step.param}.depends_on")
            if dependency == step.key:
                raise PlanError(f"step `{step.key}`: depends on itself.", f"{step.param}.depends_on", "workflow_cycle")
    cycle = find_cycle(by_key)
    if cycle:
        path = " -> ".join(cycle)
        raise PlanError(f"step `{cycle[0]}`: the workflow has a cycle ({path}).", f"{by_key[cycle[0]].param}.depends_on", "workflow_cycle")
    for step in steps:
        try:
            read = templates.references(step.template)
        except templates.TemplateError as error:
            raise PlanError(f"step `{step.key}`: {error}.", f"{step.param}.template") from None
        ancestors = _ancestors(step.key, by_key)
        for name in sorted(read):
            if name not in by_key:
                raise PlanError(
                    f"step `{step.key}`: the template reads `steps.{name}`, which is no step of this run.", f"{step.param}.template"
                )
            if name not in ancestors:
                raise PlanError(
                    f"step `{step.key}`: the template reads `steps.{name}.output` but does not depend on `{name}` (add it to depends_on).",
                    f"{step.param}.template",
                )
        embedding = step.config.get("embedding")
        if embedding is not None and (embedding not in ancestors or by_key[embedding].kind != StepKind.EMBED):
            raise PlanError(f"step `{step.key}`: `embedding` must name an embed step it depends on.", f"{step.param}.embedding")


def find_cycle(by_key: dict[str, StepSpec]) -> list[str]:
    """A cycle as the path of ids that closes it (first id repeated at the end), or []."""
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(by_key, white)
    stack: list[str] = []

    def visit(key: str) -> list[str]:
        color[key] = grey
        stack.append(key)
        for dependency in by_key[key].depends_on:
            if color[dependency] == grey:
                return [*stack[stack.index(dependency) :], dependency]
            if color[dependency] == white and (found := visit(dependency)):
                return found
        stack.pop()
        color[key] = black
        return []

    for key in by_key:
        if color[key] == white and (found := visit(key)):
            return found
    return []


def _ancestors(key: str, by_key: dict[str, StepSpec]) -> set[str]:
    seen: set[str] = set()
    todo = list(by_key[key].depends_on)
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo.extend(by_key[current].depends_on)
    return seen
