"""Run metrics (as sentinel_site/metrics.py's): runs by pattern and status, step durations by kind,
fan-out width. Every label is from a closed set (patterns, states, kinds)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from runs.models import Run, Step

RUNS = Counter("sentinel_runs_total", "Runs ended, by pattern and status.", ["pattern", "status"])
STEPS = Counter("sentinel_run_steps_total", "Run steps ended, by kind and state.", ["kind", "state"])
STEP_DURATION = Histogram(
    "sentinel_run_step_duration_seconds",
    "From a step's start to its end, by kind.",
    ["kind"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
RUN_DURATION = Histogram(
    "sentinel_run_duration_seconds",
    "From a run's creation to its end, by pattern.",
    ["pattern"],
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
)
FAN_OUT = Histogram(
    "sentinel_run_fan_out", "Steps of a run, by pattern, at its creation.", ["pattern"], buckets=(1, 2, 3, 5, 10, 20, 50, 100)
)


def observe_step(step: Step) -> None:
    STEPS.labels(step.kind, step.state).inc()
    if step.started_at is not None and step.finished_at is not None:
        STEP_DURATION.labels(step.kind).observe(max(0.0, (step.finished_at - step.started_at).total_seconds()))


def observe_run(run: Run) -> None:
    RUNS.labels(run.pattern, run.status).inc()
    if run.finished_at is not None:
        RUN_DURATION.labels(run.pattern).observe(max(0.0, (run.finished_at - run.created_at).total_seconds()))


def observe_created(run: Run, steps: int) -> None:
    FAN_OUT.labels(run.pattern).observe(steps)
