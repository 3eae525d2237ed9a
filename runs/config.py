"""Declarative config: a tenant's agents and workflows in a TOML file, validated, explained, applied.

    tenant = "acme"

    [agents.researcher]
    system_prompt = "You research."
    specialization = "research"
    default_params = { temperature = 0.2 }

    [workflows.answer]
    timeout_seconds = 120
    [[workflows.answer.steps]]
    id = "recall"
    kind = "vector_search"
    [[workflows.answer.steps]]
    id = "reply"
    kind = "agent"
    agent = "researcher"
    depends_on = ["recall"]
    template = "{{input}}\\n\\nNotes: {{steps.recall.output}}"

Validation names the file, line and key of every error it finds (each workflow's graph is checked
once its steps' types are right). Applying is idempotent: an agent or workflow the file declares is
created or brought to what it says (only the fields it names); what it does not name is left alone.
`SENTINEL_CONFIG_FILE` names a file the beat reloads when it changes (runs/tasks.py); an invalid
file is refused and what was applied before stays.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.db import transaction
from django.utils import timezone

from agents.api.serializers import DefaultParamsSerializer
from agents.models import Agent
from budgets import audit
from budgets.models import Tenant
from runs import plans
from runs.api.serializers import NAME, WorkflowSerializer
from runs.models import StepKind, Workflow
from sentinel_site.errors import first_validation_error
from sentinel_site.health import CONFIG_STATUS_KEY
from sentinel_site.redis import sync_client

log = logging.getLogger(__name__)

# The agent fields a file may set, with their type and bounds (as the agents API has them). A
# provider URL and key are not among them: a key does not belong in a file, and a URL comes with one.
AGENT_FIELDS: dict[str, tuple[type, int | None, int | None]] = {
    "system_prompt": (str, None, None),
    "model": (str, None, 200),
    "specialization": (str, None, 200),
    "default_params": (dict, None, None),
    "context_budget": (int, 256, 1_000_000),
    "short_term_messages": (int, 1, 1000),
    "short_term_tokens": (int, 64, 1_000_000),
    "recall_limit": (int, 0, 100),
    "consolidation_threshold": (int, 500, 10_000_000),
}
TOP_LEVEL = {"tenant", "agents", "workflows"}
ONE_TENANT = 'a file configures one tenant: write a file for each, with `tenant = "<name>"` at its top'


@dataclass(frozen=True)
class ConfigError:
    file: str
    line: int
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.key}: {self.message}"


@dataclass
class Config:
    """A parsed file: its data, where each key sits, and its digest (what the reloader compares)."""

    path: str
    data: dict[str, Any]
    lines: dict[str, int]
    digest: str
    errors: list[ConfigError] = field(default_factory=list)

    def error(self, key: str, message: str) -> None:
        self.errors.append(ConfigError(self.path, self.line_of(key), key, message))

    def line_of(self, key: str) -> int:
        """The line of `key` (a dotted path, list items as [i]), or of its nearest parent that has one."""
        while key:
            if key in self.lines:
                return self.lines[key]
            key = re.sub(r"(\.[^.\[]+|\[\d+\])$", "", key) if re.search(r"(\.[^.\[]+|\[\d+\])$", key) else ""
        return 1


@dataclass(frozen=True)
class Change:
    kind: str  # agent | workflow
    name: str
    action: str  # created | updated | unchanged
    fields: tuple[str, ...] = ()

    def __str__(self) -> str:
        detail = f" ({', '.join(self.fields)})" if self.fields else ""
        return f"{self.kind} {self.name}: {self.action}{detail}"


# --- reading -----------------------------------------------------------------------------------
def load(path: str | Path, text: str | None = None) -> Config:
    """Parse and validate a file. A file that is not TOML has one error: where the parser stopped."""
    name = str(path)
    if text is None:
        text = Path(path).read_text(encoding="utf-8")
    config = Config(name, {}, key_lines(text), hashlib.sha256(text.encode()).hexdigest())
    try:
        config.data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        line = re.search(r"line (\d+)", str(error))
        config.errors.append(ConfigError(name, int(line.group(1)) if line else 1, "-", f"not valid TOML: {error}"))
        return config
    validate(config)
    return config


def key_lines(text: str) -> dict[str, int]:
    """Where each key is written: `agents.x.model`, `workflows.w.steps[1].kind`, tables by their header.
    A line scan, not a parser: tomllib keeps no positions, and the file is ours to shape."""
    lines: dict[str, int] = {}
    table = ""
    arrays: dict[str, int] = {}
    in_multiline: str | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if in_multiline:
            if in_multiline in line:
                in_multiline = None
            continue
        if not line or line.startswith("#"):
            continue
        if header := re.match(r"^\[\[\s*([^\]]+?)\s*\]\]", line):
            name = _unquote(header.group(1))
            arrays[name] = arrays.get(name, -1) + 1
            table = f"{name}[{arrays[name]}]"
            lines.setdefault(name, number)
            lines[table] = number
            continue
        if header := re.match(r"^\[\s*([^\]]+?)\s*\]", line):
            table = _unquote(header.group(1))
            parts = table.split(".")
            for end in range(1, len(parts) + 1):  # a table's parents are first written where it is
                lines.setdefault(".".join(parts[:end]), number)
            continue
        if assignment := re.match(r'^("[^"]+"|[A-Za-z0-9_.-]+)\s*=\s*(.*)$', line):
            key = _unquote(assignment.group(1))
            lines[f"{table}.{key}" if table else key] = number
            for quote in ('"""', "'''"):
                if assignment.group(2).startswith(quote) and assignment.group(2).count(quote) == 1:
                    in_multiline = quote
    return lines


def _unquote(dotted: str) -> str:
    return ".".join(part.strip().strip('"').strip("'") for part in dotted.split("."))


# --- validating --------------------------------------------------------------------------------
def validate(config: Config) -> None:
    data = config.data
    for key in sorted(set(data) - TOP_LEVEL):
        value = data[key]
        if key == "tenants" or (isinstance(value, dict) and ("agents" in value or "workflows" in value)):
            config.error(key, f"unknown key: {ONE_TENANT}")
        else:
            config.error(key, f"unknown key; a config file has {', '.join(sorted(TOP_LEVEL))}")
    if isinstance(data.get("tenant"), list | dict):
        config.error("tenant", f"must be one tenant's name: {ONE_TENANT}")
    elif not isinstance(data.get("tenant"), str) or not data["tenant"]:
        config.error("tenant", "required: the name of the tenant this file configures")
    agents = _table(config, "agents")
    for name, agent in agents.items():
        _validate_agent(config, name, agent)
    workflows = _table(config, "workflows")
    tenant = Tenant.objects.filter(name=data.get("tenant")).first() if isinstance(data.get("tenant"), str) else None
    existing = set(Agent.objects.live().filter(tenant=tenant).values_list("name", flat=True)) if tenant else set()
    for name, workflow in workflows.items():
        _validate_workflow(config, name, workflow, known_agents=set(agents) | existing)


def _table(config: Config, key: str) -> dict[str, Any]:
    value = config.data.get(key, {})
    if not isinstance(value, dict):
        config.error(key, "must be a table")
        return {}
    return value


def _validate_agent(config: Config, name: str, agent: Any) -> None:
    where = f"agents.{name}"
    if not NAME.match(name):
        config.error(where, "an agent's name is letters, digits, - and _ (at most 64)")
    if not isinstance(agent, dict):
        config.error(where, "must be a table")
        return
    for key, value in agent.items():
        if key == "tenant":
            config.error(f"{where}.{key}", f"an agent belongs to the file's tenant: {ONE_TENANT}")
            continue
        if key not in AGENT_FIELDS:
            config.error(f"{where}.{key}", f"unknown agent field; allowed: {', '.join(AGENT_FIELDS)}")
            continue
        kind, low, high = AGENT_FIELDS[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            config.error(f"{where}.{key}", f"must be {'a string' if kind is str else 'an integer' if kind is int else 'a table'}")
        elif isinstance(value, int) and ((low is not None and value < low) or (high is not None and value > high)):
            config.error(f"{where}.{key}", f"must be between {low} and {high}")
        elif isinstance(value, str) and high is not None and len(value) > high:
            config.error(f"{where}.{key}", f"at most {high} characters")
        elif key == "default_params":
            params = DefaultParamsSerializer(data=value)
            if not params.is_valid():
                param, message = first_validation_error(params.errors)
                config.error(f"{where}.{key}.{param}" if param else f"{where}.{key}", message)


def _validate_workflow(config: Config, name: str, workflow: Any, *, known_agents: set[str]) -> None:
    where = f"workflows.{name}"
    if not NAME.match(name):
        config.error(where, "a workflow's name is letters, digits, - and _ (at most 64)")
    if not isinstance(workflow, dict):
        config.error(where, "must be a table")
        return
    for key in sorted(set(workflow) - {"steps", "timeout_seconds"}):
        config.error(f"{where}.{key}", "unknown workflow field; allowed: steps, timeout_seconds")
    checked = WorkflowSerializer(data={key: value for key, value in workflow.items() if key in ("steps", "timeout_seconds")})
    if not checked.is_valid():
        param, message = first_validation_error(checked.errors)
        config.error(f"{where}.{param}" if param else where, message)
        return
    steps = checked.validated_data["steps"]
    for index, step in enumerate(steps):
        if step.get("agent") and step["agent"] not in known_agents:
            config.error(f"{where}.steps[{index}].agent", f"step `{step['id']}`: unknown agent `{step['agent']}`")
        elif step["kind"] in (StepKind.AGENT, StepKind.LLM) and not step.get("agent"):
            config.error(f"{where}.steps[{index}]", f"step `{step['id']}`: a {step['kind']} step needs `agent`")
    specs = [
        plans.StepSpec(
            key=step["id"],
            kind=step["kind"],
            template=step.get("template") or plans.INPUT,
            depends_on=list(step.get("depends_on") or []),
            config={key: step[key] for key in ("embedding",) if step.get(key)},
            param=f"workflow.steps[{index}]",
        )
        for index, step in enumerate(steps)
    ]
    try:
        plans.check_graph(specs)
    except plans.PlanError as error:
        key = (error.param or "workflow").replace("workflow.", f"{where}.", 1)
        config.error(key, str(error))


# --- explaining and applying ---------------------------------------------------------------------
def changes(config: Config) -> list[Change]:
    """What applying the (valid) file would do, and change nothing."""
    tenant = Tenant.objects.filter(name=config.data["tenant"]).first()
    result = []
    for name, wanted in config.data.get("agents", {}).items():
        agent = Agent.objects.live().filter(tenant=tenant, name=name).first() if tenant else None
        if agent is None:
            result.append(Change("agent", name, "created", tuple(sorted(wanted))))
            continue
        differing = tuple(sorted(key for key, value in wanted.items() if getattr(agent, key) != value))
        result.append(Change("agent", name, "updated" if differing else "unchanged", differing))
    for name, wanted in config.data.get("workflows", {}).items():
        workflow = Workflow.objects.filter(tenant=tenant, name=name).first() if tenant else None
        definition = workflow_definition(wanted)
        if workflow is None:
            result.append(Change("workflow", name, "created"))
        else:
            result.append(Change("workflow", name, "updated" if workflow.definition != definition else "unchanged"))
    return result


def workflow_definition(wanted: dict[str, Any]) -> dict[str, Any]:
    """A workflow as stored: its steps as the runs API validates them (defaults filled in)."""
    checked = WorkflowSerializer(data=wanted)
    checked.is_valid(raise_exception=True)
    return {key: value for key, value in _plain(checked.validated_data).items() if value is not None}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def apply(config: Config, *, actor: str = audit.SYSTEM) -> list[Change]:
    """Bring the tenant's agents and workflows to what the (valid) file says, in one transaction, audited."""
    if config.errors:
        raise ValueError("an invalid config cannot be applied")
    with transaction.atomic():
        tenant, _ = Tenant.objects.get_or_create(name=config.data["tenant"])
        planned = changes(config)
        for change in planned:
            if change.action == "unchanged":
                continue
            if change.kind == "agent":
                wanted = config.data["agents"][change.name]
                agent = Agent.objects.live().filter(tenant=tenant, name=change.name).first() or Agent(tenant=tenant, name=change.name)
                for key, value in wanted.items():
                    setattr(agent, key, value)
                agent.save()
            else:
                Workflow.objects.update_or_create(
                    tenant=tenant,
                    name=change.name,
                    defaults={"definition": workflow_definition(config.data["workflows"][change.name]), "source": config.path},
                )
        touched = [str(change) for change in planned if change.action != "unchanged"]
        if touched:
            audit.record(
                "config.applied", actor=actor, tenant_id=tenant.id, target=config.path, data={"digest": config.digest, "changes": touched}
            )
    return planned


# --- hot reload ------------------------------------------------------------------------------------
def status() -> dict[str, Any]:
    """What the reloader last did (also on /health): the file, the digest applied, the refused one and why."""
    raw = sync_client().get(CONFIG_STATUS_KEY)
    return json.loads(raw) if raw else {}


def reload(path: str) -> str:
    """Apply the file if it changed since it was last applied or refused; an invalid file is refused,
    logged and reported on /health, and what was applied before stays. Returns what it did."""
    last = status()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        _save({**last, "file": path, "error": [f"{path}: cannot read it: {error.strerror or error}"]})
        log.error("the config file cannot be read", extra={"file": path})
        return "unreadable"
    digest = hashlib.sha256(text.encode()).hexdigest()
    if digest in (last.get("digest"), last.get("refused")) and last.get("file") == path:
        return "unchanged"
    loaded = load(path, text)
    if loaded.errors:
        errors = [str(error) for error in loaded.errors]
        _save({**last, "file": path, "refused": digest, "error": errors})
        log.error("the config file was refused; the config applied before stays: %s", "; ".join(errors), extra={"file": path})
        return "refused"
    applied = apply(loaded)
    _save({"file": path, "digest": digest, "applied_at": timezone.now().isoformat(), "error": None})
    log.info("config applied: %s", "; ".join(str(change) for change in applied if change.action != "unchanged") or "no change")
    return "applied"


def _save(value: dict[str, Any]) -> None:
    sync_client().set(CONFIG_STATUS_KEY, json.dumps(value))


# --- the file's JSON Schema (GET /v1/config/schema) ------------------------------------------------
def json_schema() -> dict[str, Any]:
    """The JSON Schema of a config file (as TOML maps to JSON); validation says more (lines, graphs, agents)."""
    name = {"type": "string", "pattern": NAME.pattern}

    def agent_field(kind: type, low: int | None, high: int | None) -> dict[str, Any]:
        if kind is int:
            return {"type": "integer", "minimum": low, "maximum": high}
        if kind is dict:
            return {"type": "object", "description": "Defaults for temperature, max_tokens, ... (as in a chat request)."}
        return {"type": "string", **({"maxLength": high} if high else {})}

    step = {
        "type": "object",
        "required": ["id", "kind"],
        "additionalProperties": False,
        "properties": {
            "id": name,
            "kind": {"type": "string", "enum": ["agent", "llm", "embed", "vector_search", "transform"]},
            "depends_on": {"type": "array", "items": name},
            "agent": name,
            "template": {"type": "string", "description": "{{input}} and {{steps.<id>.output}}; default {{input}}."},
            "system": {"type": "string"},
            "k": {"type": "integer", "minimum": 1, "maximum": 50},
            "embedding": name,
            "scope_agent": name,
            "timeout_seconds": {"type": "integer", "minimum": 1, "maximum": 86400},
            "retries": {"type": "integer", "minimum": 0, "maximum": 5},
        },
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Sentinel config file (TOML)",
        "type": "object",
        "required": ["tenant"],
        "additionalProperties": False,
        "properties": {
            "tenant": {"type": "string", "minLength": 1, "description": "The tenant the file configures (created if new)."},
            "agents": {
                "type": "object",
                "propertyNames": name,
                "additionalProperties": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {key: agent_field(*spec) for key, spec in AGENT_FIELDS.items()},
                },
            },
            "workflows": {
                "type": "object",
                "propertyNames": name,
                "additionalProperties": {
                    "type": "object",
                    "required": ["steps"],
                    "additionalProperties": False,
                    "properties": {
                        "steps": {"type": "array", "minItems": 1, "maxItems": 100, "items": step},
                        "timeout_seconds": {"type": "integer", "minimum": 1, "maximum": 86400},
                    },
                },
            },
        },
    }
