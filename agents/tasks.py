"""Celery tasks for turns: thin wrappers that take ids and hand off to agents.runner."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task
from django import db

from agents import runner, supervisor
from agents.turns import AgentState
from memory import embeddings
from memory.tasks import schedule_indexing
from sentinel_site import logs, tracing

log = logging.getLogger(__name__)
CLAIM_RETRY_SECONDS = 1
CLAIM_RETRIES = 30


@shared_task(bind=True, name="agents.tasks.run_turn", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_turn(self, turn_id: str, recall_hint: str | None = None) -> str:
    """Run one turn. Delivered twice, or for a turn not ready yet, it does nothing.
    `recall_hint`: the text the turn will recall by, embedded while the turn is claimed."""
    # Worker threads run task after task: start each turn with a clean log context.
    tokens = [logs.turn_id.set(turn_id), logs.trace_id.set("-"), logs.tenant_id.set("-")]
    try:
        if recall_hint:
            _prefetch(recall_hint)
        try:
            recorder = runner.claim(turn_id)
        except (db.OperationalError, db.InterfaceError) as error:
            # The database blinked (a restart, dropped connections): nothing was claimed, so try
            # again in a moment rather than leave the turn to the Supervisor's slower sweep.
            log.warning("could not claim a turn: %s; retrying", type(error).__name__)
            raise self.retry(countdown=CLAIM_RETRY_SECONDS, max_retries=CLAIM_RETRIES) from None
        if recorder is None:
            return "skipped"
        with _attempt_span(recorder) as span:
            try:
                following = runner.execute(recorder)
                # A turn that completed is back to Idle; a failed one stopped where it failed.
                span.set_attribute("sentinel.turn.status", "succeeded" if recorder.state == AgentState.IDLE else "failed")
            except runner.LostClaim:
                log.warning("lost the claim on a turn; another attempt owns it")
                span.set_attribute("sentinel.turn.status", "lost_claim")
                return "lost-claim"
            except Exception as error:
                # A bug or a lost dependency mid-turn: fail the turn visibly rather than leave it
                # running; if even that fails, the supervisor's sweep finds it by its stale heartbeat.
                log.exception("turn crashed")
                span.fail(type(error).__qualname__, error)
                following = runner.crash(recorder)
                span.set_attribute("sentinel.turn.status", "failed")
        schedule_indexing()  # the new messages go to long-term memory
        if following is not None:
            enqueue_turn(following)
        return "done"
    finally:
        for var, token in zip((logs.turn_id, logs.trace_id, logs.tenant_id), tokens, strict=True):
            var.reset(token)


def _prefetch(text: str) -> None:
    """Only a head start: if it fails, the turn embeds its query itself, as without it."""
    try:
        embeddings.prefetch([text])
    except Exception as error:  # noqa: BLE001 - never a reason to fail or delay a turn
        log.info("could not prefetch the recall query: %s", type(error).__name__)


def _attempt_span(recorder: runner.Recorder):
    """The CONSUMER span of one attempt, a child of the request's span wherever and whenever it runs."""
    turn = recorder.turn
    return tracing.span(
        "turn.run",
        "consumer",
        {
            "messaging.operation.type": "process",
            "messaging.destination.name": "turns",
            "sentinel.turn.id": str(turn.id),
            "sentinel.turn.attempt": recorder.attempt,
            "sentinel.tenant.id": str(turn.tenant_id),
            "sentinel.agent.name": turn.agent.name,
        },
        parent_traceparent=turn.traceparent,
    )


def enqueue_turn(turn_id: Any, countdown: int = 0, recall_hint: str | None = None) -> None:
    kwargs = {"recall_hint": recall_hint} if recall_hint else {}
    run_turn.apply_async(args=[str(turn_id)], kwargs=kwargs, queue="turns", countdown=countdown or None)


@shared_task(name="agents.tasks.supervise", ignore_result=True)
def supervise() -> dict:
    """The Supervisor's sweep: requeue zombies with backoff, dead-letter the hopeless, send the unsent."""
    result = supervisor.sweep()
    for turn_id, delay in result.requeued:
        enqueue_turn(turn_id, countdown=delay)
    for turn_id in result.unsent:
        enqueue_turn(turn_id)
    return {"requeued": len(result.requeued), "dead": len(result.dead), "unsent": len(result.unsent)}
