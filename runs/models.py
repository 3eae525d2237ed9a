"""Runs: several agents (and plain steps) working on one input, each agent step a real turn.

A Run is what a client asked for (a pattern and its agents, or a workflow); its Steps are the plan
compiled from it (runs/plans.py), one row per step, in the database from the start. The rows are
the dispatcher's only state (runs/dispatcher.py): a step whose dependencies succeeded is started
from them, whoever looks, so a crash anywhere loses nothing, and a step that finished (its output,
usage and cost checkpointed on its row) is never run again.
"""

from __future__ import annotations

import uuid

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.utils import timezone

from budgets.models import Tenant


class Pattern(models.TextChoices):
    PARALLEL = "parallel"
    PIPELINE = "pipeline"
    BROADCAST = "broadcast"
    ROUTE = "route"
    WORKFLOW = "workflow"


class RunStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


RUN_UNFINISHED = (RunStatus.QUEUED, RunStatus.RUNNING)


class Run(models.Model):
    """One multi-agent request and its outcome."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="runs")
    api_key = models.ForeignKey("budgets.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="runs")
    pattern = models.CharField(max_length=16, choices=Pattern.choices)
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED)
    input = models.JSONField(help_text="A text, or OpenAI chat messages.")
    request = models.JSONField(encoder=DjangoJSONEncoder, default=dict, help_text="The request as validated (what a re-run submits).")
    aggregate = models.JSONField(null=True, blank=True, help_text="parallel: concat, first, vote or {agent: name}.")
    max_cost = models.DecimalField(max_digits=14, decimal_places=8, null=True, blank=True, help_text="USD the run may spend at most.")
    timeout_seconds = models.PositiveIntegerField(null=True, blank=True, help_text="The whole run's time limit.")
    deadline = models.DateTimeField(null=True, blank=True, editable=False)
    metadata = models.JSONField(default=dict, blank=True)
    shared_memory = models.BooleanField(default=False, help_text="Its agent steps read and write one run-scoped memory (memory/shared.py).")
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001 - NULL keeps the unique constraint partial
    request_hash = models.CharField(max_length=64, blank=True)
    output = models.TextField(blank=True)
    result = models.JSONField(null=True, blank=True, help_text="The aggregate, structured (answers by step, votes, missing agents).")
    error = models.JSONField(null=True, blank=True)
    cost = models.DecimalField(max_digits=14, decimal_places=8, default=0)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "idempotency_key"],
                condition=models.Q(idempotency_key__isnull=False),
                name="run_idempotency_key_unique_per_tenant",
            )
        ]
        indexes = [
            models.Index(fields=["tenant", "-created_at"], name="run_tenant_recent"),
            models.Index(fields=["updated_at"], condition=models.Q(status__in=["queued", "running"]), name="run_unfinished"),
        ]

    def __str__(self) -> str:
        return f"{self.pattern} run {self.id} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status not in RUN_UNFINISHED

    @property
    def memory_scope(self) -> str:
        """The scope of its shared memory (memory/shared.py), or "" without one."""
        return f"run:{self.id}" if self.shared_memory else ""


class StepKind(models.TextChoices):
    AGENT = "agent"  # a turn of an agent
    LLM = "llm"  # one completion through an agent's provider settings, no memory
    EMBED = "embed"  # a text's embedding
    VECTOR_SEARCH = "vector_search"  # the tenant's long-term memory, searched
    TRANSFORM = "transform"  # a template only
    ROUTE = "route"  # picks the agent of a route run


class StepState(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"  # did not answer within its timeout_seconds (or the run's)
    SKIPPED = "skipped"  # not needed any more: a dependency failed, or the run ended without it
    CANCELLED = "cancelled"


STEP_FINISHED = (StepState.SUCCEEDED, StepState.FAILED, StepState.TIMED_OUT, StepState.SKIPPED, StepState.CANCELLED)


class Step(models.Model):
    """One step of a run: what it runs, what it waits for, and (checkpointed when it ends) what it gave.

    `attempt` counts starts: a start is a conditional update claim from pending on the attempt the
    dispatcher saw, and an agent step's turn is admitted with an Idempotency-Key of (run, step,
    attempt), so a dispatcher that starts the same attempt again finds the same turn.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="steps")
    key = models.CharField(max_length=64, help_text="The step's id within its run (workflow ids, agent names).")
    position = models.PositiveIntegerField()
    kind = models.CharField(max_length=16, choices=StepKind.choices)
    agent = models.ForeignKey("agents.Agent", null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    agent_from = models.CharField(max_length=64, blank=True, help_text="A route step whose choice is this step's agent.")
    depends_on = models.JSONField(default=list, blank=True)
    template = models.TextField(blank=True, help_text="What the step is given: {{input}}, {{steps.<id>.output}}.")
    config = models.JSONField(default=dict, blank=True, help_text="Kind-specific settings (k, system prompt, candidates).")
    timeout_seconds = models.PositiveIntegerField(null=True, blank=True)
    retries = models.PositiveIntegerField(default=0)
    state = models.CharField(max_length=16, choices=StepState.choices, default=StepState.PENDING)
    attempt = models.PositiveIntegerField(default=0)
    turn = models.ForeignKey("agents.Turn", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    input = models.JSONField(null=True, blank=True, help_text="What the step was given, rendered, as it started.")
    output = models.TextField(blank=True)
    result = models.JSONField(null=True, blank=True, help_text="Structured output: hits with sources, a vector, route scores.")
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(max_digits=14, decimal_places=8, default=0)
    worst_case_cost = models.DecimalField(max_digits=14, decimal_places=8, default=0, help_text="What the running attempt may cost.")
    abandoned_cost = models.DecimalField(
        max_digits=14,
        decimal_places=8,
        default=0,
        help_text="What attempts given up on may cost: an ended turn's cost, a still-running one's worst case (max_cost counts it).",
    )
    error = models.JSONField(null=True, blank=True)
    checkpoint = models.JSONField(null=True, blank=True, help_text="The finished step's record: attempt, turn, output, usage, cost.")
    started_at = models.DateTimeField(null=True, blank=True)
    deadline = models.DateTimeField(null=True, blank=True, help_text="When the running attempt times out.")
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "position"]
        constraints = [models.UniqueConstraint(fields=["run", "key"], name="step_key_unique_per_run")]
        indexes = [
            models.Index(fields=["tenant", "state"], name="step_tenant_state"),
        ]

    def __str__(self) -> str:
        return f"{self.key} ({self.state})"

    @property
    def is_finished(self) -> bool:
        return self.state in STEP_FINISHED

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class RunEvent(models.Model):
    """An immutable entry in a run's log: a step started or ended, the route chosen, the run's end."""

    id = models.BigAutoField(primary_key=True)
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=32)
    step = models.CharField(max_length=64, blank=True)
    payload = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["run", "id"]

    def __str__(self) -> str:
        return f"{self.kind} {self.step}".strip()


class Workflow(models.Model):
    """A workflow declared in config (runs/config.py), run by name: `{"pattern": "workflow", "workflow": name}`."""

    id = models.BigAutoField(primary_key=True)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="workflows")
    name = models.SlugField(max_length=64)
    definition = models.JSONField(help_text="Its steps and timeout_seconds, as a run's inline `workflow`.")
    source = models.CharField(max_length=500, blank=True, help_text="The config file it came from.")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="workflow_name_unique_per_tenant")]

    def __str__(self) -> str:
        return self.name
