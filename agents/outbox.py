"""The web's outbox of turns for the workers: the turns admitted at the same moment go as one message.

Every admitted turn used to be a broker message of its own: a publish in the web process, and in
the worker a delivery, a reservation in the broker's unacked index, a task and an acknowledgement,
which measured about a quarter of a worker's CPU. Request threads `put` turns; one thread sends
what was put while its last message went out as the next one (nothing waits on a timer, so a lone
turn goes at once and a busy web sends batches as large as the load makes them). A message that
cannot be sent is logged and dropped: its turns are in the database, queued, and the Supervisor
sends what was never sent (SENTINEL_UNSENT_SECONDS).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable

from sentinel_site import metrics

log = logging.getLogger(__name__)

_mean_batch = 1.0  # turns per message lately, in this process


def mean_batch() -> float:
    """Turns per message this process sent lately: the broker's queue length counts messages."""
    return _mean_batch


class Outbox:
    """Turns ([turn id, recall hint, tenant id]) from many threads, handed to `send` in lists of up to `max_batch`."""

    def __init__(self, send: Callable[[list[list[str | None]]], None], max_batch: int) -> None:
        self.send = send
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[list[str | None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pid = 0  # the thread belongs to the process that started it

    def put(self, turn_id: str, recall_hint: str | None = None, tenant_id: str | None = None) -> None:
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    threading.Thread(target=self._serve, name="turn-outbox", daemon=True).start()
                    self._pid = os.getpid()
        self._queue.put([turn_id, recall_hint, tenant_id])

    def _serve(self) -> None:
        global _mean_batch
        while True:
            batch = [self._queue.get()]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            _mean_batch = 0.9 * _mean_batch + 0.1 * len(batch)
            try:
                self.send(batch)
                metrics.ENQUEUE_BATCH.observe(len(batch))
            except Exception as error:  # noqa: BLE001 - the turns are durable; the Supervisor sends them
                log.warning("could not send %d turn(s) to the workers: %s", len(batch), type(error).__name__)
