"""The audit log: append-only and hash-chained.

Each entry's hash covers the previous entry's hash and the entry's canonical JSON, so editing,
deleting or reordering any entry breaks every hash after it. Appends lock the chain's head row
(AuditHead) and take their sequence number and previous hash from it: concurrent writers queue and
the chain cannot fork. Because the head also remembers the last sequence number, cutting entries
off the end is caught too, even after new entries were appended. No secrets and no prompt text
go in: callers pass ids, names and numbers.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from django.db import transaction
from django.utils import timezone

from budgets.models import AuditEntry, AuditHead

GENESIS = "0" * 64


def canonical(entry: AuditEntry) -> str:
    return json.dumps(
        {
            "seq": entry.seq,
            "tenant": str(entry.tenant_id) if entry.tenant_id else None,
            "actor": entry.actor,
            "action": entry.action,
            "target": entry.target,
            "data": entry.data,
            "created_at": entry.created_at.isoformat(),
        },
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )


def chain_hash(prev_hash: str, entry: AuditEntry) -> str:
    return hashlib.sha256((prev_hash + canonical(entry)).encode()).hexdigest()


def record(action: str, *, actor: str, tenant_id=None, target: str = "", data: dict[str, Any] | None = None) -> AuditEntry:
    """Append one entry. Joins the caller's transaction: if that rolls back, so does the entry."""
    with transaction.atomic(savepoint=False):  # no SAVEPOINT round trips while the head is locked
        head, _ = AuditHead.objects.select_for_update().get_or_create(id=1)
        entry = AuditEntry(
            seq=head.seq + 1,
            tenant_id=tenant_id,
            actor=actor[:200],
            action=action,
            target=str(target)[:200],
            data=json.loads(json.dumps(data or {}, default=str)),
            created_at=timezone.now(),
            prev_hash=head.hash,
        )
        entry.hash = chain_hash(head.hash, entry)
        entry.save(force_insert=True)
        head.seq, head.hash = entry.seq, entry.hash
        head.save(update_fields=["seq", "hash"])
    return entry


def verify() -> int | None:
    """The sequence number of the first entry that is missing, altered or out of place; None if intact."""
    expected_seq, expected_prev = 1, GENESIS
    for entry in AuditEntry.objects.order_by("seq").iterator(chunk_size=2000):
        if entry.seq != expected_seq or entry.prev_hash != expected_prev:
            return expected_seq
        if chain_hash(entry.prev_hash, entry) != entry.hash:
            return entry.seq
        expected_seq, expected_prev = entry.seq + 1, entry.hash
    head = AuditHead.objects.filter(id=1).first()
    last_seq = expected_seq - 1
    if head is not None and (head.seq != last_seq or head.hash != expected_prev):
        return last_seq + 1  # entries were cut off the end
    return None
