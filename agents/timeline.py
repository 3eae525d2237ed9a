"""A turn's story in time order, for its admin page: its logged events (states, claims, provider
requests with the context pieces behind them, answers, retries, errors, stops, approvals), what it
reserved and spent, and the audit entries that name it.

Read-only; every row read here belongs to the turn's tenant (the turn page was scoped already).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agents.models import EventKind, Turn
from budgets.models import AuditEntry, Reservation, SpendEntry
from sentinel_site import money

DETAIL_CHARS = 400  # of a payload shown under an event; the full payload is in the events table below


@dataclass
class Entry:
    """One line of the timeline."""

    at: datetime
    kind: str  # event | error | spend | audit: how it is drawn
    title: str
    detail: str = ""


def _clip(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)
    return text if len(text) <= DETAIL_CHARS else text[:DETAIL_CHARS] + "…"


def _context(payload: dict) -> str:
    context = payload.get("context") or {}
    pieces = context.get("pieces") or []
    lines = [
        f"{p.get('kind', '?')}: {p.get('tokens', 0)} tokens" + (f", score {p['score']:.2f}" if isinstance(p.get("score"), float) else "")
        for p in pieces
    ]
    head = f"context: {len(pieces)} pieces, {context.get('total_tokens', 0)} tokens" if pieces else "resumed from its persisted request"
    return "\n".join([head, *lines])


def _event(record) -> Entry:
    payload = record.payload or {}
    kind = record.kind
    title = {
        EventKind.QUEUED: "Queued",
        EventKind.CLAIMED: f"Claimed by a worker (attempt {record.attempt})",
        EventKind.COMPLETED: "Completed",
        EventKind.FAILED: "Failed",
    }.get(kind, kind.replace("_", " ").capitalize())
    detail = ""
    style = "error" if kind in (EventKind.FAILED, EventKind.PROVIDER_ERROR, EventKind.PROVIDER_RETRY, EventKind.DEAD_LETTERED) else "event"
    if kind == EventKind.STATE:
        title = f"State {record.from_state or '—'} → {record.to_state}"
    elif kind == EventKind.PROVIDER_REQUEST:
        body = payload.get("body") or {}
        title = f"Provider request: {body.get('model', '?')} with {len(body.get('messages') or [])} messages"
        detail = _context(payload)
    elif kind == EventKind.PROVIDER_RESPONSE:
        usage = payload.get("usage") or {}
        reason, used = payload.get("finish_reason") or "?", usage.get("total_tokens", 0)
        title = f"Provider answered ({reason}, {used} tokens, {payload.get('latency_ms')} ms)"
        detail = _clip(payload.get("content") or payload.get("tool_calls") or "")
    elif kind in (EventKind.PROVIDER_ERROR, EventKind.PROVIDER_RETRY, EventKind.FAILED):
        detail = _clip(payload.get("message") or payload)
    elif kind == EventKind.COMPLETED and payload.get("cost") is not None:
        title = f"Completed, cost {money.money(payload['cost'])}"
    elif payload:
        detail = _clip(payload)
    return Entry(record.created_at, style, title, detail)


def timeline(turn: Turn) -> list[Entry]:
    entries = [_event(record) for record in turn.events.order_by("created_at", "attempt", "seq")]
    for held in Reservation.objects.filter(turn=turn, tenant_id=turn.tenant_id):
        entries.append(Entry(held.created_at, "spend", f"Reserved {money.money(held.amount)} of budget ({held.status})"))
    for entry in SpendEntry.objects.filter(turn=turn, tenant_id=turn.tenant_id):
        entries.append(
            Entry(
                entry.created_at,
                "spend",
                f"Spent {money.money(entry.cost)} on {entry.model or '?'}",
                f"{entry.prompt_tokens} prompt + {entry.completion_tokens} completion tokens",
            )
        )
    for audited in AuditEntry.objects.filter(tenant_id=turn.tenant_id, target=str(turn.id)):
        entries.append(
            Entry(audited.created_at, "audit", f"Audit: {audited.action} by {audited.actor}", _clip(audited.data) if audited.data else "")
        )
    return sorted(entries, key=lambda e: e.at)
