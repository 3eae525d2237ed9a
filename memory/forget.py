"""Forgetting a message: its text removed, or redacted, everywhere Sentinel stored it.

Where a message's text lives, and what forgetting does there:

    the message row                   deleted; its Memory (the embedding) cascades
    summaries built from it           deleted with their memories. Not re-summarised here (that is
                                      a model call): their other source messages are un-marked
                                      (Message.summary is SET_NULL), so the Dreamer summarises them
                                      again when the conversation is next due
    the embedding cache               the entries of its text, of its recall query and of those
                                      summaries (shared by identical texts: they are computed again)
    turn events (agents_turnevent)    redacted in place: the provider_request and provider_response
                                      of its own turn, and the provider_request of every turn whose
                                      context carried it (recent window, recall, or a summary of it:
                                      found by its id in the recorded context), each then marked
                                      `redacted` with the ids of the messages forgotten from it
    the turn's output                 Turn.output is cleared (SET_NULL) when the message is a reply
    the turn's live Redis stream      deleted (its deltas and `done` hold the reply); readers of a
                                      finished turn fall back to its event log
    consolidation runs                hold no text; a run's link to a deleted summary is cleared

Turn events are an append-only log: TurnEventRecord refuses save() and delete(). Redaction is the
one sanctioned exception: a queryset update of one event's payload, in this module only, that
replaces forgotten text with REDACTED and adds the `redacted` mark; nothing else about an event
changes. A message of a turn still running is refused (TurnInProgress): the worker holds its text in flight.
"""

from __future__ import annotations

import re
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from agents import streams
from agents.models import Conversation, EventKind, Message, Turn, TurnEventRecord, TurnStatus
from budgets import audit
from memory import shared
from memory.embeddings import content_hash, recent_keys
from memory.indexing import forget_memories_of, message_text
from memory.models import EmbeddingCache, Memory, Summary
from sentinel_site.redis import sync_client

REDACTED = "[forgotten]"
# Texts this long are redacted wherever they occur; shorter ones only where they stand alone (a
# whole message, a whole line, a recalled line's text), so "ok" never eats the "ok" of "token".
SUBSTRING_MIN_CHARS = 16


class MessageNotFound(Exception):
    """The conversation holds no message with this id (another tenant's is no different)."""

    def __init__(self) -> None:
        super().__init__("No such message.")


class TurnInProgress(Exception):
    """A turn that holds the message's text in flight has not finished: forgetting it now would miss that copy."""

    def __init__(self) -> None:
        super().__init__(
            "A turn of this conversation is running or waiting to run with this message; forget it when the turn has finished."
        )


def forget_message(conversation: Conversation, message_id, *, actor: str) -> dict[str, Any]:
    """Forget one message of the conversation; returns what was done, counted per place."""
    with transaction.atomic():
        message = Message.objects.select_for_update().filter(id=message_id, conversation=conversation).first()
        if message is None:
            raise MessageNotFound
        if Turn.objects.filter(conversation=conversation, status=TurnStatus.RUNNING).exists() or (
            message.turn_id and Turn.objects.filter(id=message.turn_id, status=TurnStatus.QUEUED).exists()
        ):
            raise TurnInProgress
        summaries = list(
            Summary.objects.filter(Q(source_message_ids__contains=[message.id]) | Q(id=message.summary_id), conversation=conversation)
        )
        needles = _needles(message, summaries)
        redacted_events, redacted_turns = 0, set()
        for event in _events_holding(conversation, message):
            payload = _redacted(event.kind, event.payload, needles, message.id)
            if payload is None:
                continue
            TurnEventRecord.objects.filter(id=event.id).update(payload=payload)  # the sanctioned exception: see above
            redacted_events += 1
            redacted_turns.add(event.turn_id)
        stream_turns = {message.turn_id, *Turn.objects.filter(output=message).values_list("id", flat=True)} - {None}
        report = {
            "memories": Memory.objects.filter(Q(message=message) | Q(summary__in=summaries) | _facts_from(message)).count(),
            "summaries": len(summaries),
            "unmarked_messages": Message.objects.filter(summary__in=summaries).exclude(id=message.id).count(),
            "turn_outputs": Turn.objects.filter(output=message).count(),
            "turn_events": redacted_events,
            "turns": len(redacted_turns),
        }
        hashes = {content_hash(text, conversation.tenant_id) for text in needles if text}
        report["embedding_cache_entries"], _ = EmbeddingCache.objects.filter(content_hash__in=hashes).delete()
        Summary.objects.filter(id__in=[summary.id for summary in summaries]).delete()
        Memory.objects.filter(_facts_from(message), conversation=conversation).delete()  # they quote it
        message.delete()
        forget_memories_of(conversation.tenant_id, conversation.agent_id)
        # Last, so a Redis failure rolls everything back (503) and a commit failure leaves only the
        # stream gone, which the event log stands in for.
        report["turn_streams"] = sync_client().delete(*map(streams.key, stream_turns)) if stream_turns else 0
        if hashes:
            sync_client().delete(*recent_keys(hashes))  # the vectors kept a few seconds (embeddings.RECENT_PREFIX)
        audit.record("memory.message_forgotten", actor=actor, tenant_id=conversation.tenant_id, target=str(message_id), data=report)
    return report


def _facts_from(message: Message) -> Q:
    return Q(kind="fact", source_message_ids__contains=[message.id])


def _needles(message: Message, summaries: list[Summary]) -> list[str]:
    """The texts to redact, longest first (a summary that quotes the message goes whole)."""
    texts = {message.content, message_text(message), *(summary.text for summary in summaries)}
    for call in message.tool_calls or []:
        texts.add(call.get("function", {}).get("arguments", ""))
    return sorted((text for text in texts if text), key=len, reverse=True)


def _events_holding(conversation: Conversation, message: Message) -> list[TurnEventRecord]:
    """The provider exchanges of the message's own turn, and every provider request since it was
    stored whose recorded context names it (recent, recalled, or a summary of it) in this agent, or,
    for a conversation in a shared memory scope, in any agent of the tenant (memory/shared.py)."""
    exchanges = (EventKind.PROVIDER_REQUEST, EventKind.PROVIDER_RESPONSE)
    own = Q(turn_id=message.turn_id, kind__in=exchanges) if message.turn_id else Q(pk__in=[])
    carried = Q(
        kind=EventKind.PROVIDER_REQUEST,
        created_at__gte=message.created_at,
        turn__tenant_id=conversation.tenant_id,
        payload__context__pieces__contains=[{"source_message_ids": [str(message.id)]}],
    )
    if not shared.scope_of(conversation):
        carried &= Q(turn__agent_id=conversation.agent_id)  # else the scope's other agents recalled it too
    return list(TurnEventRecord.objects.filter(own | carried).order_by("id"))


def _redacted(kind: str, payload: dict, needles: list[str], message_id) -> dict | None:
    """The payload with the needles redacted and the mark added, or None if it held none of them."""
    if kind == EventKind.PROVIDER_REQUEST:
        body = payload.get("body") or {}
        messages = [_redact_message(m, needles) for m in body.get("messages") or []]
        changed = messages != (body.get("messages") or [])
        updated = {**payload, "body": {**body, "messages": messages}}
    else:
        content = _scrub(payload.get("content") or "", needles) if payload.get("content") else payload.get("content")
        calls = [_redact_call(call, needles) for call in payload.get("tool_calls") or []]
        changed = content != payload.get("content") or calls != (payload.get("tool_calls") or [])
        updated = {**payload, "content": content, "tool_calls": calls or payload.get("tool_calls")}
    if not changed:
        return None
    mark = payload.get("redacted") or {}
    updated["redacted"] = {"message_ids": [*mark.get("message_ids", []), str(message_id)], "at": timezone.now().isoformat()}
    return updated


def _redact_message(message: dict, needles: list[str]) -> dict:
    message = dict(message)
    content = message.get("content")
    if isinstance(content, str):
        message["content"] = _scrub(content, needles)
    elif isinstance(content, list):
        message["content"] = [
            {**part, "text": _scrub(part["text"], needles)} if isinstance(part.get("text"), str) else part for part in content
        ]
    if message.get("tool_calls"):
        message["tool_calls"] = [_redact_call(call, needles) for call in message["tool_calls"]]
    return message


def _redact_call(call: dict, needles: list[str]) -> dict:
    function = call.get("function") or {}
    if not isinstance(function.get("arguments"), str):
        return call
    return {**call, "function": {**function, "arguments": _scrub(function["arguments"], needles)}}


def _scrub(text: str, needles: list[str]) -> str:
    for needle in needles:
        if needle not in text:
            continue
        if text == needle:
            return REDACTED
        if len(needle) >= SUBSTRING_MIN_CHARS:
            text = text.replace(needle, REDACTED)
        else:
            text = re.sub(rf"(^|\n|\] ){re.escape(needle)}(?=\n|$)", lambda match: match.group(1) + REDACTED, text)
    return text
