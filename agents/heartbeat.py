"""Heartbeats of the turns a worker process is running, from one thread, whatever the turns wait on.

A turn's heartbeat must move while its worker waits on the provider, first token or not: the
Supervisor takes back a running turn silent for ZOMBIE_SECONDS (60 s) and the provider may take
LLM_TIMEOUT (120 s) to answer, so a heartbeat that moved only when a token arrived got a slow turn
run (and paid for) three times. One daemon thread per process beats every turn it tracks in one
UPDATE every HEARTBEAT_SECONDS, fenced on the attempt like every other write of a turn: a turn
whose row did not answer was taken back, and its tracker says so (`lost`), so the worker stops at
its next step. The same beat keeps the turns' budget reservations from expiring while they run.
A turn shorter than one interval is never beaten: nothing is added to the common path.

The same thread carries cancels and interrupts to the turns (agents/control.py): every
STOP_POLL_SECONDS it reads the stop flags of the turns it tracks from Redis (one MGET, only while
turns run), and each beat reads the durable flag on the turn's row, should Redis have lost one. A
turn asked to stop has its provider stream closed (`abort`), so it stops within a poll even when
no token comes; its worker ends it as asked (agents/runner.py).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone

from agents.stops import stop_flags

log = logging.getLogger(__name__)


@dataclass
class Tracked:
    """One running turn, as its worker thread and the heartbeat thread share it."""

    turn_id: uuid.UUID
    attempt: int
    since: float = field(default_factory=time.monotonic)  # tracked, or last beaten, at
    lost: threading.Event = field(default_factory=threading.Event)
    stop: str = ""  # a Stop asked of the turn: cancel, interrupt, rollback or shutdown
    abort: Callable[[], None] | None = None  # closes the provider stream being read, while one is

    def request_stop(self, kind: str) -> None:
        """Ask the turn's worker to stop: at its next token, or at once if its stream is closed."""
        if self.stop:
            return
        self.stop = kind
        abort = self.abort
        if abort is not None:
            try:
                abort()
            except Exception:
                log.info("could not close a stopping turn's provider stream", exc_info=True)


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


def running_here() -> list[Tracked]:
    """The turns this process runs now."""
    with _lock:
        return list(_tracked.values())


def _run() -> None:
    last_beat = time.monotonic()
    while True:
        time.sleep(min(settings.SENTINEL["STOP_POLL_SECONDS"], settings.SENTINEL["HEARTBEAT_SECONDS"]))
        # The beat first: a zombie sweep must never see a live turn silent because Redis was slow.
        if time.monotonic() - last_beat >= min(1.0, settings.SENTINEL["HEARTBEAT_SECONDS"]) / 2:
            last_beat = time.monotonic()
            try:
                beat_once()
            except Exception:  # a failed beat is retried next interval: the thread must live
                log.warning("could not beat the running turns' heartbeats", exc_info=True)
            finally:
                connection.close()  # back to the pool (or closed): a beat every few seconds needs no connection kept
        try:
            poll_stops()
        except Exception:  # Redis blinked (the client gives up within half a second): the beat's read of the row's flag is the fallback
            log.info("could not read the running turns' stop flags", exc_info=True)


def poll_stops() -> int:
    """Pass on the stops asked in Redis of the turns tracked here; how many were asked."""
    running = [each for each in running_here() if not each.stop]
    if not running:
        return 0
    asked = 0
    for each, kind in zip(running, stop_flags([each.turn_id for each in running]), strict=True):
        if kind:
            each.request_stop(kind)
            asked += 1
    return asked


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
            "WHERE t.id = b.id AND t.attempt = b.attempt AND t.status = 'running' RETURNING t.id, t.stop_requested",
            [stamp, ids, [tracked.attempt for tracked in due]],
        )
        rows = cursor.fetchall()
        alive = {row[0] for row in rows}
        stops = {row[0]: row[1] for row in rows if row[1]}
        # A held reservation outlives its turn's wait however long the provider takes; written
        # only when less than half its time is left, so most beats write nothing here.
        cursor.execute(
            "UPDATE budgets_reservation SET expires_at = %s WHERE turn_id = ANY(%s::uuid[]) AND status = 'held' AND expires_at < %s",
            [stamp + ttl, list(alive), stamp + ttl / 2],
        )
    for each in due:
        each.since = now
        if each.turn_id not in alive:
            each.lost.set()
        elif each.turn_id in stops:
            each.request_stop(stops[each.turn_id])
    return len(alive)
