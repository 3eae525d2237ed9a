"""Celery tasks for turns: thin wrappers that take ids and hand off to agents.runner."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Any

from celery import shared_task
from celery.signals import worker_init, worker_ready, worker_shutting_down
from django import db
from django.conf import settings

from agents import heartbeat, runner, supervisor
from agents.models import Stop
from agents.outbox import Outbox
from agents.turns import AgentState
from memory import embeddings
from memory.tasks import schedule_indexing
from sentinel_site import logs, tracing
from sentinel_site.singletons import once_per_period

log = logging.getLogger(__name__)
CLAIM_RETRY_SECONDS = 1
CLAIM_RETRIES = 30


class ClaimFailed(Exception):
    """The database blinked while claiming: nothing was claimed; the turn is to be tried again."""


@shared_task(bind=True, name="agents.tasks.run_turn", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_turn(self, turn_id: str, recall_hint: str | None = None, tenant_id: str | None = None) -> str:
    """Run one turn. Delivered twice, or for a turn not ready yet, it does nothing.
    `recall_hint`: the text the turn will recall by, embedded for the turn's tenant (`tenant_id`)
    while the turn is claimed."""
    try:
        return _run(turn_id, recall_hint, tenant_id)
    except ClaimFailed:
        # The database blinked (a restart, dropped connections): try again in a moment rather
        # than leave the turn to the Supervisor's slower sweep.
        raise self.retry(countdown=CLAIM_RETRY_SECONDS, max_retries=CLAIM_RETRIES) from None


@shared_task(name="agents.tasks.run_turns", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_turns(turns: list[list[str | None]]) -> str:
    """Several turns in one message ([turn id, recall hint, tenant id] each; the web's enqueue batches them):
    run side by side on the process's turn threads, acknowledged once all have ended. Each is the
    same run as `run_turn`'s, so a redelivered batch skips the turns that ran."""
    outcomes = list(_turn_threads().map(lambda turn: _run_or_retry(*turn), turns))
    return f"{len(outcomes)} turns: " + ", ".join(sorted({*outcomes}))


def _run_or_retry(turn_id: str, recall_hint: str | None, tenant_id: str | None = None) -> str:
    try:
        return _run(turn_id, recall_hint, tenant_id)
    except ClaimFailed:
        enqueue_turn(turn_id, countdown=CLAIM_RETRY_SECONDS)  # alone this time, as run_turn retries
        return "retrying"
    finally:
        db.close_old_connections()  # what Celery does after each task, for these threads too


_worker_concurrency = [16]  # the worker's -c, once it starts


@worker_init.connect
def _note_concurrency(sender=None, **kwargs) -> None:
    if sender is not None and isinstance(getattr(sender, "concurrency", None), int):
        _worker_concurrency[0] = sender.concurrency


@lru_cache(maxsize=1)
def _turn_threads() -> ThreadPoolExecutor:
    """As many threads as the worker has (its -c): a batch runs its turns at once, as separate
    deliveries would, and the process runs no more turns at a time than it would have."""
    return ThreadPoolExecutor(max_workers=_worker_concurrency[0], thread_name_prefix="turn")


def _run(turn_id: str, recall_hint: str | None, tenant_id: str | None) -> str:
    # Worker threads run task after task: start each turn with a clean log context.
    tokens = [logs.turn_id.set(turn_id), logs.trace_id.set("-"), logs.tenant_id.set("-")]
    try:
        if recall_hint and tenant_id:
            _prefetch(recall_hint, tenant_id)
        try:
            recorder = runner.claim(turn_id)
        except (db.OperationalError, db.InterfaceError) as error:
            log.warning("could not claim a turn: %s; retrying", type(error).__name__)
            raise ClaimFailed from None
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


def _prefetch(text: str, tenant_id: str) -> None:
    """Only a head start: if it fails, the turn embeds its query itself, as without it."""
    try:
        embeddings.prefetch([text], tenant_id)
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


def enqueue_turn(turn_id: Any, countdown: int = 0, recall_hint: str | None = None, tenant_id: str | None = None) -> None:
    """Send a turn to the workers: in the web process through the outbox, which sends the turns
    admitted at the same moment as one message (SENTINEL_ENQUEUE_BATCH_MAX); else, or delayed, alone."""
    if not countdown and settings.PROCESS == "web" and settings.SENTINEL["ENQUEUE_BATCH_MAX"] > 1:
        outbox().put(str(turn_id), recall_hint, tenant_id)
        return
    kwargs = {"recall_hint": recall_hint, "tenant_id": tenant_id} if recall_hint else {}
    run_turn.apply_async(args=[str(turn_id)], kwargs=kwargs, queue="turns", countdown=countdown or None)


def enqueue_turn_now(turn_id: str, recall_hint: str | None = None, tenant_id: str | None = None) -> None:
    kwargs = {"recall_hint": recall_hint, "tenant_id": tenant_id} if recall_hint else {}
    run_turn.apply_async(args=[turn_id], kwargs=kwargs, queue="turns")


def _send(batch: list[list[str | None]]) -> None:
    if len(batch) == 1:
        enqueue_turn_now(*batch[0])
    else:
        run_turns.apply_async(args=[batch], queue="turns")


@lru_cache(maxsize=1)
def outbox() -> Outbox:
    return Outbox(_send, settings.SENTINEL["ENQUEUE_BATCH_MAX"])


@shared_task(name="agents.tasks.supervise", ignore_result=True)
@once_per_period("supervisor")
def supervise() -> dict:
    """The Supervisor's sweep: requeue zombies with backoff, dead-letter the hopeless, send the unsent."""
    result = supervisor.sweep()
    for turn_id, delay in result.requeued:
        enqueue_turn(turn_id, countdown=delay)
    for turn_id in result.unsent + result.resumed:
        enqueue_turn(turn_id)
    return {"requeued": len(result.requeued), "dead": len(result.dead), "unsent": len(result.unsent), "resumed": len(result.resumed)}


@worker_shutting_down.connect
def _interrupt_running_turns(**kwargs) -> None:
    """A worker going down (SIGTERM, a deploy) interrupts the turns it runs instead of letting them
    be redelivered blind: each stops at its next token with its state persisted (its partial answer,
    the request it was making), and is resumed when a worker is back (`_resume_shut_down`)."""
    running = heartbeat.running_here()
    for each in running:
        each.request_stop(Stop.SHUTDOWN)
    if running:
        log.warning("shutting down: interrupted %d running turn(s); they resume on the next worker", len(running))


@worker_ready.connect
def _resume_shut_down(**kwargs) -> None:
    """A worker is up: the turns a shutdown interrupted continue (the Supervisor's sweep does it too)."""
    try:
        for turn_id in supervisor.resume_shut_down():
            enqueue_turn(turn_id)
    except Exception:
        log.warning("could not resume the turns a shutdown interrupted", exc_info=True)
    finally:
        db.connections.close_all()
