"""Submitting a run: its plan checked, then the run and all its steps written in one transaction,
its dispatcher enqueued once that commits. An Idempotency-Key works as for chat: the same key and
body give the same run; the same key with another body is refused."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from agents.admission import IdempotencyKeyReused, request_hash
from budgets import audit
from budgets.models import ApiKey, Tenant
from runs import metrics, plans
from runs.models import Pattern, Run, RunEvent, Step
from runs.tasks import enqueue_dispatch


@dataclass(frozen=True)
class Submission:
    run: Run
    created: bool  # False when an Idempotency-Key replayed an earlier request


def submit(*, tenant: Tenant, api_key: ApiKey | None, data: dict[str, Any], idempotency_key: str | None) -> Submission:
    """The run for a validated request (runs.api.serializers.RunCreateSerializer); PlanError if it cannot run."""
    digest = request_hash(data)
    if idempotency_key and (replayed := _replayed(tenant, idempotency_key, digest)):
        return Submission(replayed, created=False)
    resolved = plans.resolve(tenant, data)
    specs = plans.compile_plan(tenant, resolved)
    try:
        run = _store(tenant, api_key, data, specs, idempotency_key=idempotency_key, digest=digest, resolved=resolved)
    except IntegrityError:
        # Two requests raced with one Idempotency-Key: the loser answers with the winner's run.
        if idempotency_key and (replayed := _replayed(tenant, idempotency_key, digest)):
            return Submission(replayed, created=False)
        raise
    return Submission(run, created=True)


def _replayed(tenant: Tenant, idempotency_key: str, digest: str) -> Run | None:
    run = Run.objects.filter(tenant=tenant, idempotency_key=idempotency_key).first()
    if run is not None and run.request_hash != digest:
        raise IdempotencyKeyReused
    return run


def _store(
    tenant: Tenant,
    api_key: ApiKey | None,
    data: dict[str, Any],
    specs: list[plans.StepSpec],
    *,
    idempotency_key: str | None,
    digest: str,
    resolved: dict[str, Any],
) -> Run:
    """`data` as asked (a declared workflow by its name, so a re-run takes its current definition),
    `resolved` as it runs."""
    now = timezone.now()
    timeout = (resolved.get("workflow") or {}).get("timeout_seconds") or data.get("timeout_seconds")
    with transaction.atomic():
        run = Run.objects.create(
            tenant=tenant,
            api_key=api_key,
            pattern=data["pattern"],
            input=data["input"],
            request=data,
            aggregate=data.get("aggregate") if data["pattern"] == Pattern.PARALLEL else None,
            max_cost=data.get("max_cost"),
            timeout_seconds=timeout,
            deadline=now + timedelta(seconds=timeout) if timeout else None,
            metadata=data.get("metadata") or {},
            shared_memory=bool(data.get("shared_memory")),
            idempotency_key=idempotency_key or None,
            request_hash=digest,
            created_at=now,
        )
        Step.objects.bulk_create(
            Step(
                tenant=tenant,
                run=run,
                key=spec.key,
                position=position,
                kind=spec.kind,
                agent=spec.agent,
                agent_from=spec.agent_from,
                depends_on=spec.depends_on,
                template=spec.template,
                config=spec.config,
                timeout_seconds=spec.timeout_seconds,
                retries=spec.retries,
            )
            for position, spec in enumerate(specs)
        )
        RunEvent.objects.create(run=run, kind="run_created", payload={"pattern": run.pattern, "steps": [spec.key for spec in specs]})
        audit.record(
            "run.created",
            actor=audit.actor_for_key(api_key),
            tenant_id=tenant.id,
            target=str(run.id),
            data={"pattern": run.pattern, "steps": len(specs), "max_cost": str(run.max_cost) if run.max_cost is not None else None},
        )
        transaction.on_commit(lambda: enqueue_dispatch(run.id))
    metrics.observe_created(run, len(specs))
    return run
