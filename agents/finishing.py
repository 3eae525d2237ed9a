"""A succeeded turn's outcome, written in hand-written SQL with many turns to one transaction.

A `Finish` is plain data: the reply, the turn's outcome, its events, its settlement and its audit
entry. `write` puts any number of them in the caller's transaction with a fixed number of
statements, whatever the count: multi-row inserts from arrays and updates joined to `unnest(...)`,
merged into four statements (SENTINEL_FINISH_STATEMENTS=merged: the outcome, the audit head's lock,
the audit entries, the settlement) or one each (`steps`: nine). `finish` writes one through the
worker's group commit (sentinel_site/groupcommit.py), so the turns that end together share one
commit and one fsync, and lock the tenant's budget windows and the audit chain's head once for all
of them.

What each finish is held to:
- the turn's update is fenced on the attempt that claimed it; a finish whose fence fails (another
  attempt owns the turn) writes nothing of its own, except its settlement: the provider was paid for
  the call all the same, so the spend is charged, late, on the ledger;
- a reservation is settled at most once: it is claimed by a conditional update first;
- locks are taken in one order everywhere: turn rows, then the audit chain's head, then the budget
  windows by id, last. Every other path that writes both (a failed, stopped or held turn, a cancel)
  takes them in the same order, so no two of them deadlock over windows (the other order did, under
  overload, against a failing turn's release).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.db import connection, transaction

from agents.models import Message, Turn, TurnEventRecord, TurnStatus
from agents.recorder import EVENT_COLUMNS, EVENT_TYPES, EVENT_VALUES, event_rows, insert_events
from budgets import audit
from budgets.models import BudgetWindow, Reservation, SpendEntry
from sentinel_site import db
from sentinel_site.groupcommit import GroupCommit


@dataclass(frozen=True)
class Settlement:
    """What a call cost, to be charged to the reservation that held its worst case."""

    reservation_id: uuid.UUID
    model: str
    prompt_tokens: int
    completion_tokens: int
    actual: Decimal


@dataclass
class Finish:
    """Everything a succeeded attempt writes, as data (nothing is written until `write`)."""

    turn_id: uuid.UUID
    attempt: int
    tenant_id: uuid.UUID
    conversation_id: uuid.UUID
    seq: int
    at: datetime
    reply_id: uuid.UUID
    reply_index: int
    content: str
    tool_calls: list | None
    outcome: dict[str, Any]  # agent_state, model, prompt/completion tokens, latencies, finish_reason, cost
    events: list[TurnEventRecord]
    settlement: Settlement | None
    audit_entry: dict[str, Any]  # audit.record's arguments: action, actor, tenant_id, target, data


@dataclass(frozen=True)
class Finished:
    """How a finish went: `won` if it was the turn's owner (its writes are kept), the next turn of its
    conversation that waited for it, and whether its settlement was charged now."""

    won: bool
    following: uuid.UUID | None
    settled: bool


def finish(item: Finish) -> Finished:
    """Write one turn's finish durably: in the caller's transaction if it has one open, else with the
    worker's group commit (SENTINEL_WORKER_WRITES=batched) or in a transaction of its own (`sql`)."""
    if connection.in_atomic_block or settings.SENTINEL["WORKER_WRITES"] != "batched":
        with transaction.atomic():
            return write([item])[0]
    return committer().submit(item)


@lru_cache(maxsize=1)
def committer() -> GroupCommit[Finish, Finished]:
    conf = settings.SENTINEL
    return GroupCommit("finish", write, max_batch=conf["GROUP_COMMIT_MAX"], wait_seconds=conf["GROUP_COMMIT_WAIT_MS"] / 1000)


def write(finishes: Sequence[Finish]) -> list[Finished]:
    """Write `finishes` in the caller's transaction; one Finished each, in order."""
    merged = settings.SENTINEL["FINISH_STATEMENTS"] == "merged"
    with connection.cursor() as cursor:
        won, following = (_outcomes if merged else _outcomes_in_steps)(cursor, finishes)
    winners = [item for item in finishes if (item.turn_id, item.attempt) in won]
    if winners:
        audit.record_many([item.audit_entry for item in winners])
    with connection.cursor() as cursor:
        # The budget windows last: every admission of the tenant holds money on them (spend.hold),
        # so of all the rows locked here theirs are held for the fewest statements before the commit.
        settle = _settle_at_once if merged else _settle
        settled = settle(cursor, [item for item in finishes if item.settlement is not None])
    return [
        Finished(
            won=(item.turn_id, item.attempt) in won,
            following=following.get(item.conversation_id) if (item.turn_id, item.attempt) in won else None,
            settled=item.settlement is not None and item.settlement.reservation_id in settled,
        )
        for item in finishes
    ]


def _outcomes_in_steps(cursor, finishes: Sequence[Finish]) -> tuple[set[tuple[uuid.UUID, int]], dict[uuid.UUID, uuid.UUID]]:
    """The fence, then the winners' replies, events and next turns: a statement each."""
    won = _fence(cursor, finishes)
    winners = [item for item in finishes if (item.turn_id, item.attempt) in won]
    if not winners:
        return won, {}
    _insert_replies(cursor, winners)
    insert_events(cursor, [event for item in winners for event in item.events])
    return won, _next_queued(cursor, winners)


def _outcomes(cursor, finishes: Sequence[Finish]) -> tuple[set[tuple[uuid.UUID, int]], dict[uuid.UUID, uuid.UUID]]:
    """`_outcomes_in_steps` in one statement: the fenced update of the turns, and, joined to the
    turns it updated, the replies, the events and each conversation's next queued turn. The won
    (turn, attempt) pairs and {conversation id: next turn id}."""
    events = [(item, event) for item in finishes for event in item.events]
    cursor.execute(
        f"""
        WITH fenced AS ({_fence_sql()}),
        replies AS (
            INSERT INTO {_table(Message)} ({_REPLY_COLUMNS})
            SELECT {_REPLY_VALUES}
            FROM {db.recordset("v", _REPLY_TYPES + ", attempt int")}
            JOIN fenced ON fenced.id = v.turn_id AND fenced.attempt = v.attempt
        ),
        events AS (
            INSERT INTO {_table(TurnEventRecord)} ({EVENT_COLUMNS})
            SELECT {EVENT_VALUES} FROM {db.recordset("v", EVENT_TYPES + ", owner int")}
            JOIN fenced ON fenced.id = v.turn_id AND fenced.attempt = v.owner
        ),
        following AS (
            SELECT DISTINCT ON (t.conversation_id) t.conversation_id, t.id
            FROM {_table(Turn)} AS t JOIN fenced ON t.conversation_id = fenced.conversation_id
            WHERE t.status = %s
            ORDER BY t.conversation_id, t.seq
        )
        SELECT fenced.id, fenced.attempt, fenced.conversation_id, following.id
        FROM fenced LEFT JOIN following ON following.conversation_id = fenced.conversation_id
        """,
        [
            *_fence_params(finishes),
            _reply_rows(finishes, with_attempt=True),
            event_rows([event for _, event in events], owners=[item.attempt for item, _ in events]),
            TurnStatus.QUEUED.value,
        ],
    )
    rows = cursor.fetchall()
    return {(turn_id, attempt) for turn_id, attempt, _, _ in rows}, {conv: nxt for _, _, conv, nxt in rows if nxt is not None}


def _table(model: Any) -> str:
    return connection.ops.quote_name(model._meta.db_table)


_FENCE_TYPES = """id uuid, attempt int, agent_state text, at timestamptz, model text, prompt_tokens int, completion_tokens int,
    latency_ms int, provider_latency_ms int, first_token_ms int, finish_reason text, output_id uuid, cost numeric"""


@lru_cache(maxsize=1)
def _fence_sql() -> str:
    """The fenced update of the turns, returning the (turn, attempt) pairs it held for and their conversations."""
    return f"""
    UPDATE {_table(Turn)} AS t SET
        status = %s, agent_state = v.agent_state, finished_at = v.at, heartbeat_at = v.at, model = v.model,
        prompt_tokens = v.prompt_tokens, completion_tokens = v.completion_tokens, latency_ms = v.latency_ms,
        provider_latency_ms = v.provider_latency_ms, first_token_ms = v.first_token_ms,
        finish_reason = v.finish_reason, output_id = v.output_id, error = NULL, cost = t.cost + v.cost
    FROM {db.recordset("v", _FENCE_TYPES)}
    WHERE t.id = v.id AND t.attempt = v.attempt AND t.status = %s
    RETURNING t.id, v.attempt, t.conversation_id
    """


# The outcome's values the fenced update writes as they are.
_OUTCOME = ("agent_state", "model", "prompt_tokens", "completion_tokens", "latency_ms", "provider_latency_ms", "first_token_ms")


def _fence_params(finishes: Sequence[Finish]) -> list:
    rows = [
        {
            "id": item.turn_id,
            "attempt": item.attempt,
            "at": item.at,
            "output_id": item.reply_id,
            "finish_reason": item.outcome["finish_reason"],
            "cost": item.outcome["cost"],
            **{name: item.outcome[name] for name in _OUTCOME},
        }
        for item in finishes
    ]
    return [TurnStatus.SUCCEEDED.value, db.json_rows(rows), TurnStatus.RUNNING.value]


def _fence(cursor, finishes: Sequence[Finish]) -> set[tuple[uuid.UUID, int]]:
    """The turns' outcomes, each only where its attempt still owns the turn; the (turn, attempt)
    pairs it held for (two attempts of one turn may share a batch: at most one holds)."""
    cursor.execute(_fence_sql(), _fence_params(finishes))
    return {(turn_id, attempt) for turn_id, attempt, _ in cursor.fetchall()}


_REPLY_COLUMNS = """id, tenant_id, conversation_id, turn_id, seq, "index", role, content, name, tool_calls, tool_call_id,
    client_id, occurred_at, embedded, created_at"""
_REPLY_VALUES = """v.id, v.tenant_id, v.conversation_id, v.turn_id, v.seq, v.index, 'assistant', v.content, '', v.tool_calls::jsonb,
    '', '', v.at, false, v.at"""
_REPLY_TYPES = (
    "id uuid, tenant_id uuid, conversation_id uuid, turn_id uuid, seq int, index int, content text, tool_calls jsonb, at timestamptz"
)


def _reply_rows(finishes: Sequence[Finish], *, with_attempt: bool = False) -> str:
    rows = [
        {
            "id": item.reply_id,
            "tenant_id": item.tenant_id,
            "conversation_id": item.conversation_id,
            "turn_id": item.turn_id,
            "seq": item.seq,
            "index": item.reply_index,
            "content": item.content,
            "tool_calls": item.tool_calls or None,
            "at": item.at,
        }
        for item in finishes
    ]
    if with_attempt:
        for row, item in zip(rows, finishes, strict=True):
            row["attempt"] = item.attempt
    return db.json_rows(rows)


def _insert_replies(cursor, winners: list[Finish]) -> None:
    cursor.execute(
        f"INSERT INTO {_table(Message)} ({_REPLY_COLUMNS}) SELECT {_REPLY_VALUES} FROM {db.recordset('v', _REPLY_TYPES)}",
        [_reply_rows(winners)],
    )


def _next_queued(cursor, winners: list[Finish]) -> dict[uuid.UUID, uuid.UUID]:
    """Each conversation's next turn waiting for the one that ended ({conversation id: turn id}): its
    first queued turn (a resumed one may come before the turn that ended)."""
    cursor.execute(
        f"""
        SELECT DISTINCT ON (t.conversation_id) t.conversation_id, t.id
        FROM {_table(Turn)} AS t JOIN unnest(%s::uuid[]) AS v(conversation_id) ON t.conversation_id = v.conversation_id
        WHERE t.status = %s
        ORDER BY t.conversation_id, t.seq
        """,
        [[item.conversation_id for item in winners], TurnStatus.QUEUED.value],
    )
    return dict(cursor.fetchall())


# A reservation a settlement may claim: held, or late (expired, or released by a takeover).
_CLAIMABLE = (Reservation.Status.HELD.value, Reservation.Status.EXPIRED.value, Reservation.Status.RELEASED.value)


def _settle(cursor, finishes: list[Finish]) -> set[uuid.UUID]:
    """Claim the reservations (held, or late: expired or released), put their spend on the ledger and
    on their windows; the reservation ids settled now (one settled before is not charged again)."""
    if not finishes:
        return set()
    by_reservation = {item.settlement.reservation_id: item for item in finishes if item.settlement is not None}
    cursor.execute(
        f"""
        WITH claimable AS (
            SELECT id, status FROM {_table(Reservation)}
            WHERE id = ANY(%s::uuid[]) AND status IN (%s, %s, %s)
            FOR UPDATE
        )
        UPDATE {_table(Reservation)} AS r SET status = %s, closed_at = %s
        FROM claimable WHERE r.id = claimable.id
        RETURNING r.id, claimable.status, r.amount, r.tenant_id, r.api_key_id, r.turn_id
        """,
        [
            list(by_reservation),
            *_CLAIMABLE,
            Reservation.Status.SETTLED.value,
            finishes[0].at,
        ],
    )
    claimed = cursor.fetchall()
    if not claimed:
        return set()
    ledger = []
    for reservation_id, was, amount, tenant_id, api_key_id, turn_id in claimed:
        item = by_reservation[reservation_id]
        settlement = item.settlement
        assert settlement is not None
        released = amount if was == Reservation.Status.HELD else Decimal(0)  # a late one gave its hold back already
        ledger.append((reservation_id, tenant_id, api_key_id, turn_id or item.turn_id, settlement, released, item.at))
    cursor.execute(
        f"""
        INSERT INTO {_table(SpendEntry)} (tenant_id, api_key_id, turn_id, reservation_id, model, prompt_tokens,
                                          completion_tokens, cost, created_at)
        SELECT * FROM unnest(%s::uuid[], %s::uuid[], %s::uuid[], %s::uuid[], %s::text[], %s::int[], %s::int[],
                             %s::numeric[], %s::timestamptz[])
        """,
        [
            [row[1] for row in ledger],
            [row[2] for row in ledger],
            [row[3] for row in ledger],
            [row[0] for row in ledger],
            [row[4].model for row in ledger],
            [row[4].prompt_tokens for row in ledger],
            [row[4].completion_tokens for row in ledger],
            [row[4].actual for row in ledger],
            [row[6] for row in ledger],
        ],
    )
    _move_windows(cursor, ledger)
    return {row[0] for row in ledger}


_SETTLEMENT_TYPES = (
    "reservation_id uuid, turn_id uuid, model text, prompt_tokens int, completion_tokens int, actual numeric, at timestamptz"
)


def _settle_at_once(cursor, finishes: list[Finish]) -> set[uuid.UUID]:
    """`_settle` in one statement: the reservations claimed (locked first), their spend on the
    ledger, and the sums on their windows, locked in id order after the reservations, as `_settle`
    takes them; the reservation ids settled now."""
    by_reservation = {item.settlement.reservation_id: item for item in finishes if item.settlement is not None}
    if not by_reservation:
        return set()
    settlements = [(item.settlement, item) for item in by_reservation.values() if item.settlement is not None]
    through = _table(Reservation.windows.through)
    cursor.execute(
        f"""
        WITH s AS (
            SELECT * FROM {db.recordset("s", _SETTLEMENT_TYPES)}
        ),
        claimable AS (
            SELECT id, status FROM {_table(Reservation)}
            WHERE id = ANY(%s::uuid[]) AND status IN (%s, %s, %s)
            FOR UPDATE
        ),
        claimed AS (
            UPDATE {_table(Reservation)} AS r SET status = %s, closed_at = %s
            FROM claimable WHERE r.id = claimable.id
            RETURNING r.id, claimable.status AS was, r.amount, r.tenant_id, r.api_key_id, r.turn_id
        ),
        ledger AS (
            INSERT INTO {_table(SpendEntry)} (tenant_id, api_key_id, turn_id, reservation_id, model, prompt_tokens,
                                              completion_tokens, cost, created_at)
            SELECT c.tenant_id, c.api_key_id, coalesce(c.turn_id, s.turn_id), c.id, s.model, s.prompt_tokens,
                   s.completion_tokens, s.actual, s.at
            FROM claimed AS c JOIN s ON s.reservation_id = c.id
        ),
        d AS (  -- a late reservation (expired or released) gave its hold back already
            SELECT rw.budgetwindow_id AS id, sum(CASE WHEN c.was = %s THEN c.amount ELSE 0 END) AS released,
                   sum(s.actual) AS actual, sum(s.prompt_tokens + s.completion_tokens) AS tokens
            FROM claimed AS c JOIN s ON s.reservation_id = c.id JOIN {through} AS rw ON rw.reservation_id = c.id
            GROUP BY rw.budgetwindow_id
        ),
        locked AS (SELECT w.id FROM {_table(BudgetWindow)} AS w JOIN d ON d.id = w.id ORDER BY w.id FOR UPDATE OF w),
        moved AS (
            UPDATE {_table(BudgetWindow)} AS w
            SET reserved = w.reserved - d.released, settled = w.settled + d.actual, tokens = w.tokens + d.tokens
            FROM locked JOIN d ON d.id = locked.id
            WHERE w.id = locked.id
        )
        SELECT id FROM claimed
        """,
        [
            db.json_rows(
                [
                    {
                        "reservation_id": settlement.reservation_id,
                        "turn_id": item.turn_id,
                        "model": settlement.model,
                        "prompt_tokens": settlement.prompt_tokens,
                        "completion_tokens": settlement.completion_tokens,
                        "actual": settlement.actual,
                        "at": item.at,
                    }
                    for settlement, item in settlements
                ]
            ),
            list(by_reservation),
            *_CLAIMABLE,
            Reservation.Status.SETTLED.value,
            finishes[0].at,
            Reservation.Status.HELD.value,
        ],
    )
    return {reservation_id for (reservation_id,) in cursor.fetchall()}


def _move_windows(cursor, ledger: list[tuple]) -> None:
    """The budget windows' counters, the tenants' hottest rows: moved by the sums of the batch's
    settlements in one statement that locks them in id order first (as admission's hold does), so
    no round trip of this transaction comes between their lock and its commit."""
    through = _table(Reservation.windows.through)
    cursor.execute(
        f"""
        WITH d AS (
            SELECT rw.budgetwindow_id AS id, sum(s.released) AS released, sum(s.actual) AS actual, sum(s.tokens) AS tokens
            FROM unnest(%s::uuid[], %s::numeric[], %s::numeric[], %s::bigint[]) AS s(reservation_id, released, actual, tokens)
            JOIN {through} AS rw ON rw.reservation_id = s.reservation_id
            GROUP BY rw.budgetwindow_id
        ),
        locked AS (SELECT w.id FROM {_table(BudgetWindow)} AS w JOIN d ON d.id = w.id ORDER BY w.id FOR UPDATE OF w)
        UPDATE {_table(BudgetWindow)} AS w
        SET reserved = w.reserved - d.released, settled = w.settled + d.actual, tokens = w.tokens + d.tokens
        FROM locked JOIN d ON d.id = locked.id
        WHERE w.id = locked.id
        """,
        [
            [row[0] for row in ledger],
            [row[5] for row in ledger],
            [row[4].actual for row in ledger],
            [row[4].prompt_tokens + row[4].completion_tokens for row in ledger],
        ],
    )
