"""The durable dispatcher: moves a run on from what its rows say, whoever calls it, however often.

`advance(run_id)` takes the run's row lock (so two dispatchers of one run take turns, and a
max_cost check sees every step another started), then in one transaction: settles the running
steps whose turns ended or whose time ran out, decides whether the run is over, and starts every
step whose dependencies succeeded. Starting a step is a conditional update claim on its row
(pending, at the attempt seen) and, for an agent step, a turn admitted through agents.admission
with an Idempotency-Key of (run, step, attempt) in the same transaction, enqueued on commit: a
dispatcher that dies before the commit leaves nothing, one that dies after it left a running step
whose turn the Supervisor sees to. A step's outcome is checkpointed on its row when it ends and is
only ever read from then on, so a finished step never runs again.

It is called by the task a turn's end enqueues (runs/signals.py), by the beat sweep over idle
unfinished runs (runs/tasks.py) and right after a run is created. Steps that are not turns (llm,
embed, vector_search, transform, route) are claimed under the lock and run after its commit, by the
same call, one at a time; a claimed step's deadline is its lease, so one whose runner died is timed
out (and retried, if it has retries) by the next pass after it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.utils import timezone

from agents import admission, control
from agents.models import Agent, Conversation, Stop, Turn, TurnStatus
from agents.tasks import enqueue_turn
from budgets import audit, spend
from memory import context as memory_context
from memory import shared
from runs import aggregate, costs, metrics, steps, streams, templates
from runs.ended import run_ended
from runs.models import Pattern, Run, RunEvent, RunStatus, Step, StepKind, StepState
from sentinel_site.errors import turn_error

log = logging.getLogger(__name__)

INLINE_LEASE_SECONDS = 120  # an inline step's deadline when it sets no timeout_seconds
DEADLINE_SLACK_SECONDS = 0.2  # a deadline's wake-up comes this late, so the deadline has passed
MAX_WAKE_SECONDS = 60  # deadlines further off than this are found by the sweep
MAX_INLINE_PER_CALL = 50  # inline steps one advance() runs before it hands over (re-enqueued)
ADMISSION_REFUSALS = (admission.AgentNotFound, memory_context.ContextLengthExceeded, spend.UnpricedModel, spend.BudgetExceeded)


Wake = Callable[[Any, float], None]  # (run id, in seconds): call advance() again then (runs.tasks.enqueue_dispatch)


@dataclass
class _Pass:
    """What one pass leaves to do after its commit."""

    inline: tuple[Run, Step, str, dict[str, list[float]]] | None = None  # a claimed inline step to run
    wakes: list[float] = field(default_factory=list)  # deadlines to look again at, in seconds from now

    def wake(self, seconds: float) -> None:
        """A short deadline is seen as it passes. A longer one (and an inline step's lease, which
        lapses only when its runner died) is left to the sweep: the run is idle by then, so the sweep
        dispatches it every interval, and no task waits long in a worker's hands (a Redis broker
        redelivers one held past its visibility timeout)."""
        if seconds <= MAX_WAKE_SECONDS:
            self.wakes.append(max(0.0, seconds))


def advance(run_id: Any, wake: Wake) -> bool:
    """Move the run on as far as it goes now. True if inline work is left for another call.
    `wake` is asked to call again when a deadline set here passes (the sweep is the backstop)."""
    for _ in range(MAX_INLINE_PER_CALL):
        done = _pass(run_id)
        for seconds in done.wakes:
            wake(run_id, seconds + DEADLINE_SLACK_SECONDS)
        if done.inline is None:
            return False
        _run_inline(*done.inline)
    return True


@dataclass(frozen=True)
class Cancelled:
    """A run just cancelled. `turns`: the turns of its steps that had not ended, each cancelled in
    turn (agents.control): a queued one never starts, a running one stops at its next token; what
    they spent is added to the run's cost as they end."""

    turns: list[Any]


def cancel(run_id: Any, *, actor: str = audit.SYSTEM) -> Cancelled | None:
    """End an unfinished run as cancelled, under its row lock: no step starts after this (a pass
    that comes later finds the run ended), its pending and running steps are cancelled; then (the
    run's lock released: their ends wake its dispatcher) its unfinished turns are. None if it had
    already ended."""
    with transaction.atomic():
        run = Run.objects.select_for_update().filter(id=run_id).first()
        if run is None or run.is_finished:
            return None
        run_steps = list(Step.objects.filter(run=run).select_related("agent", "turn"))
        unfinished = [step.turn for step in run_steps if step.state == StepState.RUNNING and step.turn and _waits_for(step.turn)]
        if unfinished:
            _event(run, "turns_cancelled", "", {"turns": [str(turn.id) for turn in unfinished]})
        _finish(run, run_steps, RunStatus.CANCELLED, {"code": "run_cancelled", "message": "The run was cancelled."})
    for turn in unfinished:
        try:
            control.request_stop(turn.id, tenant_id=run.tenant_id, kind=Stop.CANCEL, actor=actor)
        except control.TurnAlreadyFinished:
            pass  # it ended meanwhile, or was interrupted (a resume would run it: the run no longer waits)
        except Turn.DoesNotExist:
            pass
    return Cancelled(turns=[turn.id for turn in unfinished])


def _waits_for(turn: Turn) -> bool:
    """A step's turn has not ended: unfinished, or interrupted (resumable: a shutdown's is resumed
    by the Supervisor, a client's by the client), so its step waits for it, within its deadline."""
    return not turn.is_finished or turn.status == TurnStatus.INTERRUPTED


# --- one pass under the run's lock ---------------------------------------------------------------
def _pass(run_id: Any) -> _Pass:
    """Settle, decide, start; what is left for after the commit (an inline step, wake-ups) is returned."""
    done = _Pass()
    with transaction.atomic():
        run = Run.objects.select_related("tenant", "api_key").select_for_update(of=("self",)).filter(id=run_id).first()
        if run is None:
            return done
        if run.is_finished:
            _recount(run)  # a turn it left running (cancelled, timed out) ended since: what it spent counts
            return done
        now = timezone.now()
        run_steps = list(Step.objects.filter(run=run).select_related("agent", "turn__output").order_by("position"))
        if run.status == RunStatus.QUEUED:
            run.status, run.started_at = RunStatus.RUNNING, now
            Run.objects.filter(id=run.id).update(status=run.status, started_at=now)
            _event(run, "run_started", "", {"steps": len(run_steps)})
            if run.deadline is not None:
                done.wake((run.deadline - now).total_seconds())
        for step in run_steps:
            if step.state == StepState.RUNNING:
                _settle(run, step, now)
        if run.deadline is not None and now >= run.deadline:
            _at_deadline(run, run_steps)
            return done
        _skip_unreachable(run, run_steps)
        if run.error is None:
            _note_failure(run, run_steps)
        if run.error is None and not _finish_early(run, run_steps):
            _start_ready(run, run_steps, now, done)
            if run.error is None:
                _note_failure(run, run_steps)  # a step admission refused just now
        if run.is_finished:
            return done
        if all(step.is_finished for step in run_steps):
            _conclude(run, run_steps)
        elif run.error is not None and not any(step.state == StepState.RUNNING for step in run_steps):
            _finish(run, run_steps, RunStatus.FAILED, run.error)
        else:
            Run.objects.filter(id=run.id).update(updated_at=now)  # the sweep looks at runs nobody moved lately
        return done


def _settle(run: Run, step: Step, now) -> None:
    """A running step whose turn ended takes its outcome; one past its deadline times out."""
    turn = step.turn
    if step.kind == StepKind.AGENT and turn is not None and not _waits_for(turn):
        if _shares_memory(run, step):
            # Before the step counts as ended, so the steps it lets start recall what it said.
            shared.remember_turn(run.tenant_id, run.memory_scope, turn.id)
        if turn.status == TurnStatus.SUCCEEDED:
            _succeed(
                run,
                step,
                output=turn.output.content if turn.output else "",
                prompt_tokens=turn.prompt_tokens,
                completion_tokens=turn.completion_tokens,
                cost=turn.cost,
            )
        else:
            _attempt_failed(run, step, turn.error or {"code": f"turn_{turn.status}", "message": f"The step's turn {turn.status}."})
        return
    if step.deadline is not None and now >= step.deadline:
        seconds = step.timeout_seconds or INLINE_LEASE_SECONDS
        error = {"status": 504, "type": "timeout_error", "code": "step_timeout", "message": f"The step did not finish within {seconds} s."}
        if turn is not None:
            error["turn"] = str(turn.id)  # it goes on; the step no longer waits for it
        _attempt_failed(run, step, error, timed_out=True)


def _succeed(run: Run, step: Step, *, output: str, result: dict | None = None, prompt_tokens=0, completion_tokens=0, cost=0) -> None:
    now = timezone.now()
    checkpoint = {
        "attempt": step.attempt,
        "turn": str(step.turn_id) if step.turn_id else None,
        "output": output,
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
        "cost": str(cost),
        "finished_at": now.isoformat(),
    }
    fields = {
        "state": StepState.SUCCEEDED,
        "output": output,
        "result": result,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "cost": cost,
        "error": None,
        "checkpoint": checkpoint,
        "finished_at": now,
        "deadline": None,
    }
    if Step.objects.filter(id=step.id, state=StepState.RUNNING, attempt=step.attempt).update(**fields):
        for name, value in fields.items():
            setattr(step, name, value)
        _event(run, "step_succeeded", step.key, {"attempt": step.attempt, "turn": checkpoint["turn"], "cost": str(cost)})
        metrics.observe_step(step)


def _attempt_failed(run: Run, step: Step, error: dict, *, timed_out: bool = False) -> None:
    """The attempt failed: the step goes back to pending while it has retries, else it ends. What the
    attempt may still cost stays counted against max_cost: a timed-out turn or call goes on."""
    now = timezone.now()
    turn = step.turn
    ended = turn is not None and turn.is_finished
    # An ended turn cost what it cost; a timed-out one may still spend its worst case; a call that
    # failed released its hold.
    lost = turn.cost if ended and turn is not None else step.worst_case_cost if timed_out else Decimal(0)
    if step.attempt <= step.retries:
        fields: dict[str, Any] = {"state": StepState.PENDING, "turn": None, "error": error, "deadline": None}
        kind = "step_retrying"
    else:
        fields = {
            "state": StepState.TIMED_OUT if timed_out else StepState.FAILED,
            "error": error,
            "finished_at": now,
            "deadline": None,
            "checkpoint": {"attempt": step.attempt, "turn": str(step.turn_id) if step.turn_id else None, "error": error},
        }
        kind = "step_timed_out" if timed_out else "step_failed"
    fields["abandoned_cost"] = step.abandoned_cost + lost
    if Step.objects.filter(id=step.id, state=StepState.RUNNING, attempt=step.attempt).update(**fields):
        for name, value in fields.items():
            setattr(step, name, value)
        _event(run, kind, step.key, {"attempt": step.attempt, "error": error})
        if step.is_finished:
            metrics.observe_step(step)


def _skip_unreachable(run: Run, run_steps: list[Step]) -> None:
    """A pending step one of whose dependencies ended without succeeding can never start."""
    by_key = {step.key: step for step in run_steps}
    changed = True
    while changed:
        changed = False
        for step in run_steps:
            if step.state != StepState.PENDING:
                continue
            blocked = next((d for d in step.depends_on if by_key[d].is_finished and by_key[d].state != StepState.SUCCEEDED), None)
            if blocked is not None:
                _skip(run, step, f"`{blocked}` did not succeed")
                changed = True


def _skip(run: Run, step: Step, why: str) -> None:
    fields = {"state": StepState.SKIPPED, "finished_at": timezone.now(), "error": {"code": "step_skipped", "message": why}}
    if Step.objects.filter(id=step.id, state=step.state, attempt=step.attempt).update(**fields):
        for name, value in fields.items():
            setattr(step, name, value)
        _event(run, "step_skipped", step.key, {"reason": why})


def _note_failure(run: Run, run_steps: list[Step]) -> None:
    """A step that failed for good fails the run (it stops starting steps, and ends once the running
    ones settle), except where a pattern lives with missing answers: a broadcast reports them, and
    `first` needs one answer."""
    failed = [s for s in run_steps if s.state in (StepState.FAILED, StepState.TIMED_OUT)]
    if not failed:
        return
    if run.pattern == Pattern.BROADCAST or (run.pattern == Pattern.PARALLEL and run.aggregate == "first"):
        if all(s.is_finished for s in run_steps) and not any(s.state == StepState.SUCCEEDED for s in run_steps):
            _fail_run(run, {"code": "no_answers", "message": "No agent answered.", "step": failed[0].key})
        return
    step = failed[0]
    reason = (step.error or {}).get("message", "")
    _fail_run(run, {"code": "step_failed", "message": f"Step `{step.key}` failed: {reason}", "step": step.key, "cause": step.error})


def _fail_run(run: Run, error: dict) -> None:
    run.error = error
    Run.objects.filter(id=run.id).update(error=error)
    _event(run, "run_stopping", error.get("step", ""), error)


def _finish_early(run: Run, run_steps: list[Step]) -> bool:
    """`first`: the run ends with its first answer; the others are not waited for."""
    if run.pattern == Pattern.PARALLEL and run.aggregate == "first" and aggregate.first_answer(run_steps) is not None:
        _conclude(run, run_steps)
        return True
    return False


# --- starting steps --------------------------------------------------------------------------------
def _start_ready(run: Run, run_steps: list[Step], now, done: _Pass) -> None:
    """Start every pending step whose dependencies succeeded, in order; claim at most one inline step."""
    by_key = {step.key: step for step in run_steps}
    outputs = {step.key: step.output for step in run_steps if step.state == StepState.SUCCEEDED}
    for step in run_steps:
        if step.state != StepState.PENDING or not all(by_key[d].state == StepState.SUCCEEDED for d in step.depends_on):
            continue
        inline = step.kind != StepKind.AGENT
        if inline and done.inline is not None:
            continue  # the next pass claims it, after this one ran
        text = templates.render(step.template, templates.input_text(run.input), outputs)
        if step.agent_from and not _resolve_agent(run, step, by_key[step.agent_from]):
            continue
        messages = _messages(run, step, text)
        try:
            worst = _worst_case(run, step, messages)
        except ADMISSION_REFUSALS as refusal:
            _refused(run, step, refusal)
            continue
        if _over_max_cost(run, run_steps, step, worst):
            return
        if not _claim(step, now, text, messages, worst, done):
            continue
        _event(
            run, "step_started", step.key, {"attempt": step.attempt, "kind": step.kind, "agent": step.agent.name if step.agent else None}
        )
        if inline:
            vectors = {d: (by_key[d].result or {})["vector"] for d in step.depends_on if by_key[d].kind == StepKind.EMBED}
            done.inline = (run, step, text, vectors)
            continue
        _admit(run, step, messages)
        if run.error is not None:
            return


def _resolve_agent(run: Run, step: Step, source: Step) -> bool:
    """A route's answering step runs the agent its route step chose."""
    name = (source.result or {}).get("chosen")
    agent = Agent.objects.live().filter(tenant_id=run.tenant_id, name=name).first() if name else None
    if agent is None:
        _refused(run, step, admission.AgentNotFound(name or "?"))
        return False
    Step.objects.filter(id=step.id).update(agent=agent)
    step.agent = agent
    return True


def _messages(run: Run, step: Step, text: str) -> list[dict]:
    if isinstance(run.input, list) and templates.is_bare_input(step.template):
        return run.input  # a conversation passed whole, its roles kept
    return [{"role": "user", "content": text}]


def _worst_case(run: Run, step: Step, messages: list[dict]) -> Decimal:
    if step.kind not in (StepKind.AGENT, StepKind.LLM) or step.agent is None:
        return Decimal(0)  # embeddings and search are not priced (the local model costs nothing)
    params = admission.call_params(step.agent, {"model": step.agent.name, "messages": messages})
    return admission.worst_case_cost(run.tenant, step.agent, messages, params)


def _over_max_cost(run: Run, run_steps: list[Step], step: Step, worst: Decimal) -> bool:
    """Spent (finished steps, and attempts given up on) plus held (running steps' worst cases) plus
    this step's worst case."""
    if run.max_cost is None:
        return False
    spent = sum((s.cost for s in run_steps if s.is_finished), Decimal(0)) + sum((s.abandoned_cost for s in run_steps), Decimal(0))
    held = sum((s.worst_case_cost for s in run_steps if s.state == StepState.RUNNING), Decimal(0))
    if spent + held + worst <= run.max_cost:
        return False
    error = {
        "status": 503,
        "type": "budget_exceeded",
        "code": "budget_exceeded",
        "message": f"Step `{step.key}` could cost up to ${worst:.6f}; with ${spent:.6f} spent and ${held:.6f} held, "
        f"the run would exceed its max_cost of ${run.max_cost:.6f}. It stopped before this step.",
        "step": step.key,
        "spent": str(spent),
        "held": str(held),
        "worst_case": str(worst),
        "max_cost": str(run.max_cost),
    }
    _fail_run(run, error)
    return True


def _claim(step: Step, now, text: str, messages: list[dict], worst: Decimal, done: _Pass) -> bool:
    """pending -> running at the attempt seen: whoever updates nothing did not start it."""
    seconds = step.timeout_seconds or (None if step.kind == StepKind.AGENT else INLINE_LEASE_SECONDS)
    fields = {
        "state": StepState.RUNNING,
        "attempt": step.attempt + 1,
        "started_at": now,
        "deadline": now + timedelta(seconds=seconds) if seconds else None,
        "input": messages if step.kind == StepKind.AGENT else text,
        "worst_case_cost": worst,
        "turn": None,
    }
    if not Step.objects.filter(id=step.id, state=StepState.PENDING, attempt=step.attempt).update(**fields):
        return False
    for name, value in fields.items():
        setattr(step, name, value)
    if step.timeout_seconds:
        done.wake(step.timeout_seconds)
    return True


def idempotency_key(run: Run, step: Step) -> str:
    """The same attempt of the same step admits the same turn, however many dispatchers try."""
    return f"run:{run.id}:{step.key}:{step.attempt}"


def _admit(run: Run, step: Step, messages: list[dict]) -> None:
    assert step.agent is not None
    data: dict[str, Any] = {"model": step.agent.name, "messages": messages}
    if _shares_memory(run, step):
        data["conversation"] = _scoped_conversation(run, step).id
    try:
        admitted = admission.admit(
            tenant=run.tenant,
            api_key=run.api_key,
            data=data,
            idempotency_key=idempotency_key(run, step),
            enqueue=lambda turn: enqueue_turn(turn.id),
        )
    except ADMISSION_REFUSALS as refusal:
        _refused(run, step, refusal)
        return
    Step.objects.filter(id=step.id, attempt=step.attempt).update(turn=admitted.turn)
    step.turn = admitted.turn
    _event(run, "turn_admitted", step.key, {"attempt": step.attempt, "turn": str(admitted.turn.id), "created": admitted.created})


def _shares_memory(run: Run, step: Step) -> bool:
    """The step's turn reads and writes the run's shared memory (a route's router does not)."""
    return run.shared_memory and step.config.get("shared_memory", True)


def _scoped_conversation(run: Run, step: Step) -> Conversation:
    """The conversation of a shared_memory run's step attempt, in the run's memory scope: its turns
    recall what the run's other steps were given and said (memory/shared.py). Its id is derived from
    (run, step, attempt), so a dispatcher that admits the same attempt again sends the same body."""
    assert step.agent is not None
    conversation, _ = Conversation.objects.get_or_create(
        id=uuid.uuid5(run.id, f"{step.key}:{step.attempt}"),
        tenant_id=run.tenant_id,
        defaults={
            "agent": step.agent,
            "title": f"run {run.id} step {step.key}",
            "metadata": {shared.SCOPE_KEY: run.memory_scope, "run": str(run.id), "step": step.key, "attempt": step.attempt},
        },
    )
    return conversation


def _refused(run: Run, step: Step, refusal: Exception) -> None:
    """Admission refused the step's turn: it fails at once (a retry meets the same rule), and over a
    tenant budget the whole run stops."""
    error = turn_error(refusal)
    fields = {"state": StepState.FAILED, "error": error, "finished_at": timezone.now(), "deadline": None}
    Step.objects.filter(id=step.id).update(**fields)
    for name, value in fields.items():
        setattr(step, name, value)
    _event(run, "step_failed", step.key, {"attempt": step.attempt, "error": error})
    if isinstance(refusal, spend.BudgetExceeded):
        _fail_run(run, {**error, "message": f"Step `{step.key}`: {error['message']}", "step": step.key})


# --- inline steps ----------------------------------------------------------------------------------
def _run_inline(run: Run, step: Step, text: str, vectors: dict[str, list[float]]) -> None:
    try:
        outcome = steps.execute(run, step, text, vectors)
    except Exception:  # a bug, or a lost dependency: the attempt fails visibly, the run goes on deciding
        log.exception("a run step crashed", extra={"run": str(run.id), "step": step.key})
        outcome = steps.Outcome(error={"status": 500, "type": "server_error", "code": "internal_error", "message": "The step crashed."})
    with transaction.atomic():
        locked = Run.objects.select_for_update().filter(id=run.id).first()  # the outcome is recorded as a pass would
        current = Step.objects.filter(id=step.id, state=StepState.RUNNING, attempt=step.attempt).select_related("agent").first()
        if locked is None:
            return
        if locked.is_finished or current is None:
            # The run ended, or this attempt timed out, while it ran: what it gave is dropped, what it spent is not.
            if outcome.cost:
                _event(locked, "step_answer_dropped", step.key, {"attempt": step.attempt, "cost": str(outcome.cost)})
                if locked.is_finished:
                    _recount(locked)
            return
        for kind, payload in outcome.events:
            _event(locked, kind, step.key, payload)
        if outcome.error is not None:
            _attempt_failed(locked, current, outcome.error)
        else:
            _succeed(
                locked,
                current,
                output=outcome.output,
                result=outcome.result,
                prompt_tokens=outcome.prompt_tokens,
                completion_tokens=outcome.completion_tokens,
                cost=outcome.cost,
            )


# --- the end -----------------------------------------------------------------------------------------
def _conclude(run: Run, run_steps: list[Step]) -> None:
    """Every step that will finish has: the run succeeds with its aggregate, or fails."""
    if run.error is not None:
        _finish(run, run_steps, RunStatus.FAILED, run.error)
        return
    answered = [s for s in run_steps if s.state == StepState.SUCCEEDED]
    if not answered or (run.pattern not in (Pattern.BROADCAST, Pattern.PARALLEL) and len(answered) < len(run_steps)):
        _finish(run, run_steps, RunStatus.FAILED, {"code": "no_answers", "message": "The run ended without an answer."})
        return
    output, result = aggregate.result(run, run_steps)
    _finish(run, run_steps, RunStatus.SUCCEEDED, None, output=output, result=result)


def _at_deadline(run: Run, run_steps: list[Step]) -> None:
    """The whole run's time is up: a broadcast returns what came in time, anything else fails."""
    for step in run_steps:
        if not step.is_finished:
            _end_unfinished(run, step, StepState.TIMED_OUT)
    seconds = run.timeout_seconds
    if run.pattern == Pattern.BROADCAST and any(s.state == StepState.SUCCEEDED for s in run_steps):
        output, result = aggregate.result(run, run_steps)
        _finish(run, run_steps, RunStatus.SUCCEEDED, None, output=output, result=result)
        return
    _finish(run, run_steps, RunStatus.FAILED, {"status": 504, "type": "timeout_error", "code": "run_timeout",
                                               "message": f"The run did not finish within {seconds} s."})  # fmt: skip


def _end_unfinished(run: Run, step: Step, state: str) -> None:
    fields = {"state": state, "finished_at": timezone.now(), "deadline": None}
    if Step.objects.filter(id=step.id, state=step.state, attempt=step.attempt).update(**fields):
        for name, value in fields.items():
            setattr(step, name, value)
        _event(run, f"step_{state}", step.key, {"attempt": step.attempt, "turn": str(step.turn_id) if step.turn_id else None})


def _finish(run: Run, run_steps: list[Step], status: str, error: dict | None, *, output: str = "", result: dict | None = None) -> None:
    for step in run_steps:
        if not step.is_finished:
            # Pending steps of a run that ended by itself were not needed; a cancel cancels them.
            skipped = step.state == StepState.PENDING and status != RunStatus.CANCELLED
            _end_unfinished(run, step, StepState.SKIPPED if skipped else StepState.CANCELLED)
    now = timezone.now()
    cost = costs.spent(run, run_steps)
    fields = {"status": status, "error": error, "output": output, "result": result, "cost": cost, "finished_at": now}
    Run.objects.filter(id=run.id).update(**fields)
    for name, value in fields.items():
        setattr(run, name, value)
    _event(run, f"run_{status}", (error or {}).get("step", ""), {"cost": str(cost), **({"error": error} if error else {})})
    transaction.on_commit(lambda: _announce_end(run))


def _recount(run: Run) -> None:
    """A finished run's cost, brought up to date with what its turns spent after it ended."""
    cost = costs.spent(run, list(Step.objects.filter(run=run)))
    if cost != run.cost:
        Run.objects.filter(id=run.id).update(cost=cost)
        _event(run, "run_cost_updated", "", {"cost": str(cost), "was": str(run.cost)})
        run.cost = cost


def _announce_end(run: Run) -> None:
    streams.publish_end(run.id, run.status)
    metrics.observe_run(run)
    log.info("run ended", extra={"run": str(run.id), "status": run.status, "pattern": run.pattern})
    for receiver, result in run_ended.send_robust(Run, run_id=run.id, tenant_id=run.tenant_id, status=run.status):
        if isinstance(result, Exception):
            log.warning("a run_ended receiver failed: %s (%s)", type(result).__name__, getattr(receiver, "__qualname__", receiver))


def _event(run: Run, kind: str, step: str, payload: dict) -> None:
    RunEvent.objects.create(run=run, kind=kind, step=step, payload=payload)
