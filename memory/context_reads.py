"""What context assembly reads for a live turn, in hand-written SQL (`SENTINEL_CONTEXT_READS=sql`).

One statement gives memory/context.py everything it needs of the conversation itself:

    recent      the turn's own input (`seq = upto_seq`) and the newest short_term_messages before it
    uncounted   the messages the indexer has not counted yet that are not among those (usually none:
                read only when the totals count more of them than the recent rows hold)
    summaries   the conversation's 20 newest, read only when a message of it is consolidated
    totals      tokens of the history (seq <= upto_seq), of its unconsolidated part, how many
                messages are uncounted and consolidated, and whether any message of the
                conversation carries an importer's client id

Rows come back as light objects (the columns assembly uses, `Message.as_openai` itself), not model
instances; no ORM query is compiled. The ORM's reads (memory/context.py `_OrmReads`) stay the
reference: a replayed turn (`as_of`) reads through them, and tests compare the two lanes.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from django.db import connection

from agents.models import Message

SUMMARIES_READ = 20  # newest first: more never fit a budget's summary share


class WindowMessage:
    """A message of the conversation with the fields assembly reads, sent as `Message.as_openai` sends it."""

    __slots__ = ("client_id", "content", "id", "index", "name", "role", "seq", "summary_id", "token_count", "tool_call_id", "tool_calls")

    as_openai = Message.as_openai

    def __init__(self, row: tuple) -> None:
        tool_calls = row[6]
        (self.id, self.seq, self.index, self.role, self.content, self.name, _, self.tool_call_id, self.client_id, self.token_count,
         self.summary_id) = row  # fmt: skip
        # Django loads jsonb as text and decodes it in JSONField.from_db_value: the same here.
        self.tool_calls = json.loads(tool_calls) if isinstance(tool_calls, str) else tool_calls


@dataclass(frozen=True, slots=True)
class SummaryRow:
    """A summary with the fields assembly reads (memory.models.Summary's names)."""

    id: uuid.UUID
    text: str
    token_count: int
    source_message_ids: list[uuid.UUID]
    first_at: datetime | None
    last_at: datetime | None


@dataclass(frozen=True)
class HistoryRead:
    recent: list[WindowMessage]  # unordered
    uncounted: list[WindowMessage]  # uncounted messages of the history not in `recent`
    summaries: list[SummaryRow]  # newest first
    all_tokens: int
    unconsolidated_tokens: int
    uncounted_count: int
    consolidated_count: int
    has_client_ids: bool  # some message of the conversation (whatever its seq) has a client id


MESSAGE_COLUMNS = 'id, seq, "index", role, content, name, tool_calls, tool_call_id, client_id, token_count, summary_id'
_NO_MESSAGE = ", ".join(["NULL"] * 14)  # the totals row: no message or summary columns

# Parts: r(ecent), u(ncounted beyond those), s(ummary), t(otals). A summary row carries its text as
# content, its rank (newest first) as index; the totals row only its last five columns.
_STATEMENT = """
WITH recent AS (
    {own}    (SELECT {columns} FROM agents_message WHERE conversation_id = %(conversation)s{before}
     ORDER BY seq DESC, "index" DESC LIMIT %(window)s)
),
totals AS (
    SELECT sum(token_count) AS all_tokens, sum(token_count) FILTER (WHERE summary_id IS NULL) AS unconsolidated,
           count(*) FILTER (WHERE token_count IS NULL) AS uncounted, count(*) FILTER (WHERE summary_id IS NOT NULL) AS consolidated
    FROM agents_message WHERE conversation_id = %(conversation)s{upto}
)
SELECT 'r', {columns}, NULL::uuid[], NULL::timestamptz, NULL::timestamptz,
       NULL::bigint, NULL::bigint, NULL::bigint, NULL::bigint, NULL::boolean
FROM recent
UNION ALL
SELECT 'u', {columns}, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
FROM agents_message
WHERE conversation_id = %(conversation)s{upto} AND token_count IS NULL AND id NOT IN (SELECT id FROM recent)
  AND (SELECT uncounted FROM totals) > (SELECT count(*) FROM recent WHERE token_count IS NULL)
UNION ALL
(SELECT 's', id, last_seq, (row_number() OVER newest)::integer, NULL, "text", NULL, NULL, NULL, NULL, token_count, NULL,
        source_message_ids, first_at, last_at, NULL, NULL, NULL, NULL, NULL
 FROM memory_summary
 WHERE conversation_id = %(conversation)s AND (SELECT consolidated FROM totals) > 0
 WINDOW newest AS (ORDER BY last_seq DESC, created_at DESC, id DESC)
 ORDER BY last_seq DESC, created_at DESC, id DESC LIMIT {summaries})
UNION ALL
SELECT 't', {no_message},
       all_tokens, unconsolidated, uncounted, consolidated,
       EXISTS (SELECT 1 FROM agents_message WHERE conversation_id = %(conversation)s AND client_id <> '')
FROM totals
"""


@lru_cache(maxsize=2)
def _statement(with_input: bool) -> str:
    """The statement for a turn's own context (`with_input`: seq = upto_seq is the turn's input) or the next turn's."""
    own = f"(SELECT {MESSAGE_COLUMNS} FROM agents_message WHERE conversation_id = %(conversation)s AND seq = %(upto)s)\n"
    return _STATEMENT.format(
        own=own + "    UNION ALL\n" if with_input else "",
        before=" AND seq < %(upto)s" if with_input else "",
        upto=" AND seq <= %(upto)s" if with_input else "",
        columns=MESSAGE_COLUMNS,
        no_message=_NO_MESSAGE,
        summaries=SUMMARIES_READ,
    )


def read_history(conversation_id: Any, upto_seq: int | None, window: int) -> HistoryRead:
    """Everything assembly reads of the conversation for turn `upto_seq` (None: the next turn), in one statement."""
    params = {"conversation": conversation_id, "upto": upto_seq, "window": window}
    with connection.cursor() as cursor:
        cursor.execute(_statement(upto_seq is not None), params)
        rows = cursor.fetchall()
    recent, uncounted, summaries = [], [], []
    totals: tuple = (None, None, 0, 0, False)
    for row in rows:
        part = row[0]
        if part == "r":
            recent.append(WindowMessage(row[1:12]))
        elif part == "u":
            uncounted.append(WindowMessage(row[1:12]))
        elif part == "s":
            summaries.append((row[3], SummaryRow(id=row[1], text=row[5], token_count=row[10], source_message_ids=row[12],
                                                 first_at=row[13], last_at=row[14])))  # fmt: skip
        else:
            totals = row[15:20]
    summaries.sort(key=lambda ranked: ranked[0])
    all_tokens, unconsolidated, uncounted_count, consolidated, has_client_ids = totals
    return HistoryRead(
        recent=recent,
        uncounted=uncounted,
        summaries=[summary for _, summary in summaries],
        all_tokens=all_tokens or 0,
        unconsolidated_tokens=unconsolidated or 0,
        uncounted_count=uncounted_count,
        consolidated_count=consolidated,
        has_client_ids=bool(has_client_ids),
    )


def client_ids(message_ids: list[uuid.UUID]) -> dict[uuid.UUID, str]:
    """{message id: the importer's client id} of those of these messages that have one."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT id, client_id FROM agents_message WHERE id = ANY(%s) AND client_id <> ''", [message_ids])
        return dict(cursor.fetchall())
