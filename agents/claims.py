"""A queued turn claimed in hand-written SQL: two statements, the turn and what it runs with loaded.

The claim in fewer round trips than the ORM lane it replaced (bench/HISTORY.md row 22), without the
ORM's per-statement cost: the conversation's row is locked first (one turn per conversation at a time:
claims of one conversation queue there), then one statement moves the turn to running, if it is
still queued, no earlier turn of its conversation is unfinished and none runs, and reads it back joined to its
agent, conversation and API key, and its newest held reservation (admission's, on a first attempt: the
provider call's budget check takes it without a statement of its own). The update is the claim (healthchecks' conditional update): two
workers handed the same turn cannot both win it. Its commit does not wait for the disk (no client is
told of a claim; the turn's finish, committed synchronously, flushes it too: sentinel_site.db.commit_lazily).
"""

from __future__ import annotations

from typing import Any

from django.db import connection
from django.db.models import Model
from django.utils import timezone

from agents.models import UNFINISHED, Agent, Conversation, Turn, TurnStatus
from agents.turns import AgentState
from budgets.models import ApiKey, Reservation
from sentinel_site.db import columns, from_row


def _table(model: type[Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def claim(turn_id: Any) -> Turn | None:
    """Claim a queued turn inside the caller's transaction: the turn (running, its attempt counted
    up), with its agent, conversation and API key attached, and `held_at_claim` its newest held
    reservation (None if none); None if it is not ours to run (yet)."""
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT c.id, set_config('synchronous_commit', 'off', true) FROM {_table(Conversation)} AS c
            WHERE c.id = (SELECT conversation_id FROM {_table(Turn)} WHERE id = %s AND status = %s)
            FOR UPDATE OF c
            """,
            [turn_id, TurnStatus.QUEUED.value],
        )
        if cursor.fetchone() is None:
            return None  # gone, or no longer queued
        cursor.execute(
            f"""
            WITH t AS (
                UPDATE {_table(Turn)} AS t
                SET status = %s, attempt = t.attempt + 1, started_at = %s, heartbeat_at = %s, agent_state = %s
                WHERE t.id = %s AND t.status = %s AND NOT EXISTS (
                    SELECT 1 FROM {_table(Turn)} AS other
                    WHERE other.conversation_id = t.conversation_id AND other.id <> t.id
                        AND (other.status = %s OR (other.seq < t.seq AND other.status = ANY(%s)))
                )
                RETURNING t.*
            )
            SELECT {columns(Turn, "t")}, {columns(Agent, "a")}, {columns(Conversation, "c")}, {columns(ApiKey, "k")},
                   {columns(Reservation, "r")}
            FROM t
            JOIN {_table(Agent)} AS a ON a.id = t.agent_id
            JOIN {_table(Conversation)} AS c ON c.id = t.conversation_id
            LEFT JOIN {_table(ApiKey)} AS k ON k.id = t.api_key_id
            LEFT JOIN LATERAL (
                SELECT {columns(Reservation, "held")} FROM {_table(Reservation)} AS held
                WHERE held.turn_id = t.id AND held.status = %s ORDER BY held.created_at DESC LIMIT 1
            ) AS r ON true
            """,
            [
                TurnStatus.RUNNING.value,
                now,
                now,
                AgentState.THINKING.value,
                turn_id,
                TurnStatus.QUEUED.value,
                TurnStatus.RUNNING.value,  # a resumed turn may come before one that runs: still one at a time
                [str(status) for status in UNFINISHED],
                Reservation.Status.HELD.value,
            ],
        )
        row = cursor.fetchone()
    if row is None:
        return None  # an earlier turn of the conversation is unfinished: it hands over when it ends
    parts, start = [], 0
    for model in (Turn, Agent, Conversation, ApiKey, Reservation):  # the row holds each model's columns in turn
        end = start + len(model._meta.concrete_fields)
        parts.append(row[start:end])
        start = end
    turn, agent, conversation = from_row(Turn, parts[0]), from_row(Agent, parts[1]), from_row(Conversation, parts[2])
    conversation.agent = agent  # one agent per conversation (admission checks it)
    turn.agent, turn.conversation = agent, conversation
    turn.api_key = from_row(ApiKey, parts[3]) if turn.api_key_id else None
    turn.held_at_claim = from_row(Reservation, parts[4]) if parts[4][0] is not None else None  # type: ignore[attr-defined]
    return turn
