"""Heartbeats of the turns a worker process is running, from one thread, whatever the turns wait on.

A turn's heartbeat must move while its worker waits on the provider, first token or not: the
Supervisor takes back a running turn silent for ZOMBIE_SECONDS (60 s) and the provider may take
LLM_TIMEOUT (120 s) to answer, so a heartbeat that moved only when a token arrived got a slow turn
run (and paid for) three times. One daemon thread per process beats every turn it tracks in one
UPDATE every HEARTBEAT_SECONDS, fenced on the attempt like every other write of a turn: a turn
whose row did not answer was taken back, and its tracker says so (`lost`), so the worker stops at
its next step. The same beat keeps the turns' budget reservations from expiring while they run.
A turn shorter than one interval is never beaten: nothing is added to the common path.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone

log = logging.getLogger(__name__)


@dataclass
class Tracked:
    """One running turn, as its worker thread and the heartbeat thread share it."""

    turn_id: uuid.UUID
    attempt: int
    since: float = field(default_factory=time.monotonic)  # tracked, or last beaten, at
    lost: threading.Event = field(default_factory=threading.Event)


_tracked: dict[tuple[uuid.UUID, int], Tracked] = {}
_lock = threading.Lock()
_thread: threading.Thread | None = None


def track(turn_id: uuid.UUID, attempt: int) -> Tracked:
    """Start beating this attempt of a turn until `untrack`; starts the thread on first use."""
    global _thread
    tracked = Tracked(uuid.UUID(str(turn_id)), attempt)
    with _lock:
        _tracked[(tracked.turn_id, attempt)] = tracked
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_run, name="turn-heartbeats", daemon=True)
            _thread.start()
    return tracked


def untrack(tracked: Tracked) -> None:
    with _lock:
        _tracked.pop((tracked.turn_id, tracked.attempt), None)


def _run() -> None:
    while True:
        time.sleep(min(1.0, settings.SENTINEL["HEARTBEAT_SECONDS"]))  # each turn is beaten once per interval
        try:
            beat_once()
        except Exception:  # a failed beat is retried next interval: the thread must live
            log.warning("could not beat the running turns' heartbeats", exc_info=True)
        finally:
            connection.close()  # back to the pool (or closed): a beat every few seconds needs no connection kept


def beat_once(now: float | None = None) -> int:
    """Beat every turn not beaten for an interval (or never, tracked for one); mark the ones whose
    claim is gone. Returns how many were beaten."""
    now = time.monotonic() if now is None else now
    every = settings.SENTINEL["HEARTBEAT_SECONDS"]
    with _lock:
        due = [tracked for tracked in _tracked.values() if now - tracked.since >= every and not tracked.lost.is_set()]
    if not due:
        return 0
    ids = [tracked.turn_id for tracked in due]
    stamp = timezone.now()
    ttl = timedelta(seconds=settings.SENTINEL["RESERVATION_TTL_SECONDS"])
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE agents_turn AS t SET heartbeat_at = %s FROM unnest(%s::uuid[], %s::integer[]) AS b(id, attempt) "
            "WHERE t.id = b.id AND t.attempt = b.attempt AND t.status = 'running' RETURNING t.id",
            [stamp, ids, [tracked.attempt for tracked in due]],
        )
        alive = {row[0] for row in cursor.fetchall()}
        # A held reservation outlives its turn's wait however long the provider takes; written
        # only when less than half its time is left, so most beats write nothing here.
        cursor.execute(
            "UPDATE budgets_reservation SET expires_at = %s WHERE turn_id = ANY(%s::uuid[]) AND status = 'held' AND expires_at < %s",
            [stamp + ttl, list(alive), stamp + ttl / 2],
        )
    for tracked in due:
        tracked.since = now
        if tracked.turn_id not in alive:
            tracked.lost.set()
    return len(alive)
