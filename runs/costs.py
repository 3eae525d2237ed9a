"""What a run spent: everything, whichever attempt spent it and whenever it was settled.

The spend ledger is the truth for turns (a turn's row holds what its winning attempt cost; the
ledger also holds what an attempt that lost its claim was charged). A run names every turn it
admitted in its log (`turn_admitted` events: each attempt of each step, the ones retried, timed
out or cancelled too), and its inline llm calls are on their steps, or, when an answer came too late
to be used, in a `step_answer_dropped` event.
"""

from __future__ import annotations

from decimal import Decimal

from django.db.models import Sum

from budgets.models import SpendEntry
from runs.models import Run, RunEvent, Step, StepKind, StepState


def spent(run: Run, run_steps: list[Step]) -> Decimal:
    """What the run spent, all of it: the ledger's entries for every turn it admitted (every attempt of
    every step, a retried or timed-out one too, and a turn's own retries after a lost claim), plus its
    inline llm calls (a finished step's, and those whose answer came too late to be used)."""
    admitted = RunEvent.objects.filter(run=run, kind="turn_admitted").values_list("payload", flat=True)
    turns = {payload["turn"] for payload in admitted}
    ledger = SpendEntry.objects.filter(tenant_id=run.tenant_id, turn_id__in=turns).aggregate(total=Sum("cost"))["total"] if turns else None
    inline = sum((s.cost for s in run_steps if s.kind == StepKind.LLM and s.state == StepState.SUCCEEDED), Decimal(0))
    late = RunEvent.objects.filter(run=run, kind="step_answer_dropped").values_list("payload", flat=True)
    return (ledger or Decimal(0)) + inline + sum((Decimal(payload.get("cost") or 0) for payload in late), Decimal(0))
