"""A turn attempt's event log as it is written: the events buffered and flushed with the writes they
belong to, the state machine's transitions among them, and the fence every write of the attempt
goes through (the claim's attempt number: a worker that lost its claim writes nothing more)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db import connection

from agents.models import EventKind, Turn, TurnEventRecord, TurnStatus
from agents.streams import StreamKind
from agents.turns import AgentState, Trigger, transition_state
from budgets.models import Reservation
from sentinel_site import db


class LostClaim(Exception):
    """Another attempt owns this turn now; stop without writing anything more."""


@dataclass
class Recorder:
    """Buffers a turn's events and writes them (PostgreSQL, then Redis) in batches."""

    turn: Turn
    attempt: int
    state: AgentState = AgentState.IDLE
    next_seq: int = 0
    pending: list[TurnEventRecord] = field(default_factory=list)
    reservation: Reservation | None = None

    def record(self, kind: EventKind, payload: dict[str, Any] | None = None) -> None:
        self.pending.append(
            TurnEventRecord(turn_id=self.turn.id, attempt=self.attempt, seq=self.next_seq, kind=kind, payload=payload or {})
        )
        self.next_seq += 1

    def move(self, trigger: Trigger, *, wants_tools: bool = False) -> AgentState:
        """Apply a state machine trigger; the transition becomes an event in the log."""
        target = transition_state(self.state, trigger, wants_tools=wants_tools)
        self.pending.append(
            TurnEventRecord(
                turn_id=self.turn.id,
                attempt=self.attempt,
                seq=self.next_seq,
                kind=EventKind.STATE,
                from_state=self.state.value,
                to_state=target.value,
                payload={"event": trigger.value},
            )
        )
        self.next_seq += 1
        self.state = target
        return target

    def flush(self, *, lazily: bool = False) -> list[TurnEventRecord]:
        """Write buffered events to PostgreSQL; call inside the transaction they belong to. `lazily`
        (outside a transaction): the commit need not wait for the disk (sentinel_site.db.commit_lazily)."""
        written, self.pending = self.pending, []
        if written:
            with connection.cursor() as cursor:
                insert_events(cursor, written, lazily=lazily)
        return written


# The shape of a multi-row insert of events from one JSON parameter (`insert_events`; agents/finishing.py joins it to its fence).
EVENT_COLUMNS = "turn_id, seq, attempt, kind, from_state, to_state, payload, created_at"
EVENT_VALUES = "v.turn_id, v.seq, v.attempt, v.kind, v.from_state, v.to_state, v.payload, v.created_at"
EVENT_TYPES = "turn_id uuid, seq int, attempt int, kind text, from_state text, to_state text, payload jsonb, created_at timestamptz"


def event_rows(events: list[TurnEventRecord], owners: list[int] | None = None) -> str:
    """`db.recordset(alias, EVENT_TYPES)`'s parameter for `events` (with an `owner int` column, when `owners` is given)."""
    rows = [
        {
            "turn_id": event.turn_id,
            "seq": event.seq,
            "attempt": event.attempt,
            "kind": str(event.kind),
            "from_state": event.from_state,
            "to_state": event.to_state,
            "payload": event.payload,
            "created_at": event.created_at,
        }
        for event in events
    ]
    if owners is not None:
        for row, owner in zip(rows, owners, strict=True):
            row["owner"] = owner
    return db.json_rows(rows)


def insert_events(cursor, events: list[TurnEventRecord], *, lazily: bool = False) -> None:
    """Events (unsaved) in one multi-row INSERT: what bulk_create does, without the ORM's cost.
    `lazily`: the statement's own commit (autocommit) does not wait for the disk."""
    if not events:
        return
    lazy = ", (SELECT set_config('synchronous_commit', 'off', true)) AS lazily" if lazily else ""
    cursor.execute(
        f"""
        INSERT INTO {connection.ops.quote_name(TurnEventRecord._meta.db_table)} ({EVENT_COLUMNS})
        SELECT {EVENT_VALUES} FROM {db.recordset("v", EVENT_TYPES)}{lazy}
        """,
        [event_rows(events)],
    )


def record_outside_attempt(turn: Turn, kind: EventKind, payload: dict[str, Any]) -> TurnEventRecord:
    """An event written by someone other than the worker running the turn (the Supervisor, a
    client's cancel or resume): lane 0, with admission's, never into an attempt whose numbering its
    worker owns. Call inside the transaction whose change it records."""
    last = TurnEventRecord.objects.filter(turn_id=turn.id, attempt=0).order_by("-seq").values_list("seq", flat=True).first()
    return TurnEventRecord.objects.create(turn_id=turn.id, attempt=0, seq=0 if last is None else last + 1, kind=kind, payload=payload)


def state_events(events: list[TurnEventRecord]) -> list[tuple[str, dict]]:
    """The state transitions among written events, as stream events."""
    return [(StreamKind.STATE, {"from": event.from_state, "to": event.to_state}) for event in events if event.kind == EventKind.STATE]


def fenced(recorder: Recorder):
    """The turn's row, as long as this attempt still owns it."""
    return Turn.objects.filter(id=recorder.turn.id, attempt=recorder.attempt, status=TurnStatus.RUNNING)
