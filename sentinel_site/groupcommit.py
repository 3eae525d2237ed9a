"""Group commit: the durable writes of many threads in one transaction, one commit (one fsync) each.

A worker runs many turns at once on threads, and each turn ends with a write that must be durable
before anyone is told of it. Committed one by one, every turn waits for its own fsync and holds the
shared rows it updates (budget windows, the audit chain's head) across it. A `GroupCommit` owns one
thread and one database connection: threads `submit` an item and block; the thread takes everything
queued, writes it with one call of `write` in one transaction, commits, and hands each submitter its
result. Nothing waits on a timer by default: while one batch commits, the next one gathers, so a lone
turn pays nothing and a busy worker commits in batches as large as the load makes them.

A batch that fails (one bad row fails a multi-row statement, a deadlock, a dropped connection) is
written again item by item, each in its own transaction: the good ones commit, and each bad one
gets its own exception. `write` must therefore be safe to call again for the same items after a
rollback: it takes plain data and changes nothing outside the database.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

from django import db
from django.db import transaction

from sentinel_site import metrics
from sentinel_site.db import release_connection

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    """Items from many threads, written by `write` in batches of up to `max_batch`, one commit each."""

    def __init__(self, name: str, write: Callable[[Sequence[T]], list[R]], *, max_batch: int = 128, wait_seconds: float = 0.0) -> None:
        self.name = name
        self.write = write
        self.max_batch = max_batch
        self.wait_seconds = wait_seconds
        self._queue: queue.SimpleQueue[tuple[T, Future[R]]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pid = 0  # the thread belongs to the process that started it (a fork starts its own)
        self.batches = 0  # for tests and the bench: how many commits served how many items
        self.items = 0

    def submit(self, item: T) -> R:
        """Write `item` in the next batch and return what `write` gave for it, once committed; or
        raise what writing it raised (alone, if its batch failed)."""
        self._ensure_thread()
        # The caller's pooled connection goes back before it blocks: the committing thread takes one
        # from the same pool, and callers that each held one while waiting could empty it (20
        # finishing turns on a 20-connection pool: the commit waited out the pool's timeout, the
        # soak's stall, bench/HISTORY.md row 34).
        release_connection()
        future: Future[R] = Future()
        self._queue.put((item, future))
        return future.result()

    def _ensure_thread(self) -> None:
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid != os.getpid():
                threading.Thread(target=self._serve, name=f"group-commit-{self.name}", daemon=True).start()
                self._pid = os.getpid()

    def _serve(self) -> None:
        while True:
            batch = [self._queue.get()]
            if self.wait_seconds:
                time.sleep(self.wait_seconds)  # a wider window: more items a commit, at a latency cost
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._commit(batch)
            except BaseException as error:  # noqa: BLE001 - the thread must outlive any batch
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
            if self._queue.empty():
                release_connection()  # idle: the pooled connection goes back until the next batch

    def _commit(self, batch: list[tuple[T, Future[R]]]) -> None:
        items = [item for item, _ in batch]
        try:
            with transaction.atomic():
                results = self.write(items)
        except Exception as error:  # noqa: BLE001 - any failure: the items are written one by one
            db.connection.close_if_unusable_or_obsolete()  # a broken connection is replaced, not reused
            if len(batch) == 1:
                batch[0][1].set_exception(error)
                return
            log.warning("a batch of %d failed (%s: %s); writing its items one by one", len(batch), type(error).__name__, error)
            for item, future in batch:
                self._commit_one(item, future)
            return
        self.batches += 1
        self.items += len(batch)
        metrics.GROUP_COMMIT_BATCH.labels(self.name).observe(len(batch))
        for (_, future), result in zip(batch, results, strict=True):
            future.set_result(result)

    def _commit_one(self, item: T, future: Future[R]) -> None:
        try:
            with transaction.atomic():
                (result,) = self.write([item])
        except Exception as error:  # noqa: BLE001 - it is the submitter's to handle
            db.connection.close_if_unusable_or_obsolete()
            future.set_exception(error)
            return
        self.batches += 1
        self.items += 1
        metrics.GROUP_COMMIT_BATCH.labels(self.name).observe(1)
        future.set_result(result)
