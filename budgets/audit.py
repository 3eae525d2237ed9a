"""The audit log: append-only, chained with a keyed MAC, anchored outside the database by signed checkpoints.

Each entry's hash is HMAC-SHA256, under SENTINEL_AUDIT_KEY, of the previous entry's hash and the
entry's canonical JSON: editing, deleting or reordering any entry breaks every hash after it, and a
database user without the key cannot compute a chain that verifies, however consistently they
re-hash it. Appends lock the chain's head row (AuditHead) and take their sequence number and previous
hash from it: concurrent writers queue and the chain cannot fork. Because the head also remembers the
last sequence number, cutting entries off the end is caught too, even after new entries were appended.

What the database cannot show by itself is a log cut back together with its head, or emptied, or
rewritten by someone holding the key. So a beat task (`checkpoint`) signs the head (seq, hash, time)
with the key and appends it as one JSON line to SENTINEL_AUDIT_CHECKPOINT_FILE and to the log, for an
operator to ship off the box, and `check(anchors)` (`manage.py verify_audit --checkpoint FILE`) also
requires every checkpointed (seq, hash) to still be in the chain. The two MACs cannot be confused: a
chain message starts with 64 hex digits, a checkpoint message with CHECKPOINT_TYPE.

No secrets and no prompt text go in: callers pass ids, names and numbers, and name who acted with
the actor helpers below (actor_for_key, actor_for_user, ...). The log's three tables are defined
here too (budgets/models.py imports them), so the chain and its storage read as one module.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from django.conf import settings
from django.db import connections, models, transaction
from django.utils import timezone

from sentinel_site import db

log = logging.getLogger(__name__)

GENESIS = "0" * 64
CHECKPOINT_TYPE = "sentinel.audit.checkpoint"

# A chain hash from the previous hash and an entry's canonical JSON.
Hasher = Callable[[str, str], str]
# AuditEntry and AuditHead, or a migration's historical copy of them (its manager is not in its static type).
HistoricalModel = Any


# --- the log's tables ------------------------------------------------------------------------------
# Here, beside the chain that gives them their meaning, not in budgets/models.py: an ApiKey records
# its issue and revocation in this log, so budgets/models.py imports this module (which also makes
# Django register these tables under `budgets`, and keeps `budgets.models.AuditEntry` their name),
# and this module imports no model of its own app.
class AuditEntry(models.Model):
    """One entry of the append-only, keyed hash chain of the audit log."""

    seq = models.BigIntegerField(primary_key=True)
    # A plain id, not a foreign key: the tenant is part of the entry's hashed content, and deleting a
    # tenant must neither rewrite (SET NULL) nor delete (CASCADE) the entries that say what it did.
    tenant_id = models.UUIDField(null=True, blank=True, help_text="The tenant's id (kept after the tenant is deleted).")
    actor = models.CharField(max_length=200, help_text="Who: a key id, an admin user, or the system.")
    action = models.CharField(max_length=64)
    target = models.CharField(max_length=200, blank=True)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["seq"]
        verbose_name_plural = "audit entries"
        indexes = [models.Index(fields=["tenant_id", "seq"], name="audit_tenant_seq")]

    def __str__(self) -> str:
        return f"#{self.seq} {self.action}"


class AuditHead(models.Model):
    """The chain's head (last seq and hash), locked by each append: writers queue, never fork."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    seq = models.BigIntegerField(default=0)
    hash = models.CharField(max_length=64, default="0" * 64)

    def __str__(self) -> str:
        return f"audit head #{self.seq}"


class AuditCheckpoint(models.Model):
    """The last head the checkpoint task wrote out: its claim, so concurrent runs never write one twice.

    Not a trust anchor (a database user can change it): the anchors are the signed lines in the
    checkpoint file and the log, which an operator ships off the box.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    seq = models.BigIntegerField(default=0)
    hash = models.CharField(max_length=64, default="0" * 64)
    written_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"audit checkpoint #{self.seq}"


class AuditBase(models.Model):
    """Where the chain starts after a purge (lifecycle): the last purged entry's seq and hash, signed
    with the audit key, so the entries after it verify from there and nobody without the key can move
    the start. Absent until the first purge: the chain starts at 1 from GENESIS."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    seq = models.BigIntegerField()
    hash = models.CharField(max_length=64)
    at = models.CharField(max_length=40, help_text="When the prefix was purged (ISO 8601, signed).")
    sig = models.CharField(max_length=64)

    def __str__(self) -> str:
        return f"audit chain purged through #{self.seq}"


# --- who did it ----------------------------------------------------------------------------------
# Every entry's `actor` comes from here, so the log names each kind of principal one way.
SYSTEM = "system"  # Sentinel itself: a turn without a key, a tenant created by a signal, a key minted by default
SUPERVISOR = "supervisor"  # the stuck-turn sweeps
COMMAND = "command"  # a management command run by an operator
MIGRATION = "system:migration"  # a data migration (the chain's re-keying)


class _Keyed(Protocol):
    key_id: str


class _User(Protocol):
    def get_username(self) -> str: ...


def actor_for_key(api_key: _Keyed | None) -> str:
    """What an API key's requests did; without a key it was the system."""
    return actor_for_key_id(api_key.key_id) if api_key is not None else SYSTEM


def actor_for_key_id(key_id: str) -> str:
    """A presented key id, whether or not it names a key (refused authentications)."""
    return f"key:{key_id}"


def actor_for_user(user: _User) -> str:
    """An admin (Django) user."""
    return f"user:{user.get_username()}"


def actor_for_ip(ip: str) -> str:
    """A client known only by its address (too many failed authentications)."""
    return f"ip:{ip}"


# --- appending -------------------------------------------------------------------------------------


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


def legacy_sha256(prev_hash: str, text: str) -> str:
    """How entries were hashed before the chain was keyed (migration 0005 re-chains them under the key)."""
    return hashlib.sha256((prev_hash + text).encode()).hexdigest()


@lru_cache(maxsize=4)
def keyed(key: str) -> Hasher:
    """HMAC-SHA256 under `key` (OpenSSL's one-shot HMAC: about 2 µs an entry, outside any round trip)."""
    secret = key.encode()

    def mac(prev_hash: str, text: str) -> str:
        return hmac.digest(secret, (prev_hash + text).encode(), "sha256").hex()

    return mac


def _key() -> str:
    return settings.SENTINEL["AUDIT_KEY"]


def chain_hash(prev_hash: str, entry: AuditEntry) -> str:
    return keyed(_key())(prev_hash, canonical(entry))


def _entry(
    model: HistoricalModel,
    hasher: Hasher,
    *,
    seq: int,
    prev_hash: str,
    action: str,
    actor: str,
    tenant_id=None,
    target: str = "",
    data: dict[str, Any] | None = None,
) -> Any:
    """A new, hashed entry (not saved) of `model`: the current AuditEntry, or a migration's historical one."""
    entry = model(
        seq=seq,
        tenant_id=tenant_id,
        actor=actor[:200],
        action=action,
        target=str(target)[:200],
        data=json.loads(json.dumps(data or {}, default=str)),
        created_at=timezone.now(),
        prev_hash=prev_hash,
    )
    entry.hash = hasher(prev_hash, canonical(entry))
    return entry


def record(action: str, *, actor: str, tenant_id=None, target: str = "", data: dict[str, Any] | None = None) -> AuditEntry:
    """Append one entry. Joins the caller's transaction: if that rolls back, so does the entry."""
    hasher = keyed(_key())  # before the lock: nothing but the three statements while the head is held
    with transaction.atomic(savepoint=False):  # no SAVEPOINT round trips while the head is locked
        head, _ = AuditHead.objects.select_for_update().get_or_create(id=1)
        entry = _entry(
            AuditEntry,
            hasher,
            seq=head.seq + 1,
            prev_hash=head.hash,
            action=action,
            actor=actor,
            tenant_id=tenant_id,
            target=target,
            data=data,
        )
        entry.save(force_insert=True)
        head.seq, head.hash = entry.seq, entry.hash
        head.save(update_fields=["seq", "hash"])
    return entry


_ENTRY_FIELDS = ("seq", "tenant_id", "actor", "action", "target", "data", "created_at", "prev_hash", "hash")
_ENTRY_TYPES = (
    "seq bigint, tenant_id uuid, actor text, action text, target text, data jsonb, created_at timestamptz, prev_hash text, hash text"
)


def record_many(entries: list[dict[str, Any]]) -> list[AuditEntry]:
    """Append several entries (each `record`'s keyword arguments) under one lock of the head: the
    group commit's way, two statements for any number of entries."""
    hasher = keyed(_key())
    head_table, entry_table = (connections["default"].ops.quote_name(m._meta.db_table) for m in (AuditHead, AuditEntry))
    with transaction.atomic(savepoint=False), connections["default"].cursor() as cursor:
        cursor.execute(f"SELECT seq, hash FROM {head_table} WHERE id = 1 FOR UPDATE")
        row = cursor.fetchone()
        if row is None:  # the very first entry of a deployment
            head, _ = AuditHead.objects.select_for_update().get_or_create(id=1)
            row = (head.seq, head.hash)
        chained, (seq, prev_hash) = [], row
        for each in entries:
            seq += 1
            entry = _entry(AuditEntry, hasher, seq=seq, prev_hash=prev_hash, **each)
            chained.append(entry)
            prev_hash = entry.hash
        cursor.execute(
            f"""
            WITH added AS (
                INSERT INTO {entry_table} (seq, tenant_id, actor, action, target, data, created_at, prev_hash, hash)
                SELECT v.seq, v.tenant_id, v.actor, v.action, v.target, v.data, v.created_at, v.prev_hash, v.hash
                FROM {db.recordset("v", _ENTRY_TYPES)}
            )
            UPDATE {head_table} SET seq = %s, hash = %s WHERE id = 1
            """,
            [db.json_rows([{name: getattr(e, name) for name in _ENTRY_FIELDS} for e in chained]), seq, prev_hash],
        )
    return chained


# --- verifying -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Break:
    """Where the chain stops being trustworthy, and why."""

    seq: int
    reason: str

    def __str__(self) -> str:
        return f"sequence number {self.seq} ({self.reason})"


def check(anchors: Mapping[int, Checkpoint] | None = None) -> Break | None:
    """The first entry that is missing, altered, out of place or off its checkpoint; None if intact.

    Streams the chain in order. `anchors` (verified checkpoints by seq) add what the database alone
    cannot show: an entry whose keyed hash differs from the signed one (rewritten by a key holder),
    and a chain shorter than a checkpoint (truncated with its head, or wiped).
    """
    anchors = anchors or {}
    hasher = keyed(_key())
    expected_seq, expected_prev = 1, GENESIS
    base = AuditBase.objects.filter(id=1).first()
    if base is not None:  # a purged prefix: the chain verifies from its signed end (the entries at or
        # below it that a purge in progress has not deleted yet are not read)
        if not hmac.compare_digest(base.sig, base_signature(base.seq, base.hash, base.at)):
            return Break(base.seq + 1, "the signed start of the chain after a purge does not verify (forged or moved)")
        anchor = anchors.get(base.seq)
        if anchor is not None and anchor.hash != base.hash:
            return Break(base.seq, f"rewritten: the purge's start differs from the signed checkpoint of {anchor.at}")
        expected_seq, expected_prev = base.seq + 1, base.hash
    for entry in AuditEntry.objects.filter(seq__gte=expected_seq).order_by("seq").iterator(chunk_size=2000):
        if entry.seq != expected_seq or entry.prev_hash != expected_prev:
            return Break(expected_seq, "missing or out of place")
        if hasher(entry.prev_hash, canonical(entry)) != entry.hash:
            hint = "; if every entry fails, SENTINEL_AUDIT_KEY is not the key that wrote the chain" if entry.seq == 1 else ""
            return Break(entry.seq, f"altered: its keyed hash does not match its content{hint}")
        anchor = anchors.get(entry.seq)
        if anchor is not None and anchor.hash != entry.hash:
            return Break(entry.seq, f"rewritten: its hash differs from the signed checkpoint of {anchor.at}")
        expected_seq, expected_prev = entry.seq + 1, entry.hash
    last_seq = expected_seq - 1
    head = AuditHead.objects.filter(id=1).first()
    if head is not None and (head.seq != last_seq or head.hash != expected_prev):
        return Break(last_seq + 1, f"cut off the end: the head remembers sequence number {head.seq}")
    if anchors:
        newest = anchors[max(anchors)]
        if newest.seq > last_seq:
            what = "wiped: the chain is empty" if last_seq == 0 else f"truncated: the chain ends at {last_seq}"
            return Break(last_seq + 1, f"{what}, but the signed checkpoint of {newest.at} names {newest.seq}")
    return None


def verify() -> int | None:
    """The sequence number of the first entry that is missing, altered or out of place; None if intact."""
    broken = check()
    return broken.seq if broken else None


# --- checkpoints -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Checkpoint:
    """The chain's head at a moment, signed with the audit key: one line of the checkpoint file."""

    seq: int
    hash: str
    at: str
    sig: str

    @staticmethod
    def signature(seq: int, hash: str, at: str) -> str:
        message = json.dumps({"seq": seq, "hash": hash, "at": at}, sort_keys=True, separators=(",", ":"))
        return hmac.new(_key().encode(), f"{CHECKPOINT_TYPE}\n{message}".encode(), hashlib.sha256).hexdigest()

    @classmethod
    def sign(cls, seq: int, hash: str) -> Checkpoint:
        at = timezone.now().isoformat(timespec="seconds")
        return cls(seq=seq, hash=hash, at=at, sig=cls.signature(seq, hash, at))

    def is_authentic(self) -> bool:
        return hmac.compare_digest(self.sig, self.signature(self.seq, self.hash, self.at))

    def fields(self) -> dict[str, Any]:
        return {"type": CHECKPOINT_TYPE, "seq": self.seq, "hash": self.hash, "at": self.at, "sig": self.sig}

    def line(self) -> str:
        return json.dumps(self.fields(), separators=(",", ":"))


def checkpoint() -> Checkpoint | None:
    """Sign the chain's head and write it out (file and log line); None if the head did not move.

    Safe to run concurrently (two beats, a beat and a manual run): the write is claimed by a
    conditional update of AuditCheckpoint, held until the line is written, so the loser writes
    nothing. Reads the head without locking it: appends never wait for a checkpoint.
    """
    head = AuditHead.objects.filter(id=1).values_list("seq", "hash").first()
    if head is None or head[0] == 0:
        return None
    last, _ = AuditCheckpoint.objects.get_or_create(id=1)
    if (last.seq, last.hash) == head:
        return None
    purged_through = AuditBase.objects.filter(id=1).values_list("seq", flat=True).first() or 0
    if last.seq > purged_through and not AuditEntry.objects.filter(seq=last.seq, hash=last.hash).exists():
        # An early alarm only (this row lives in the database too): verify_audit --checkpoint decides.
        log.error("the audit chain no longer holds the last checkpoint (seq %d): truncated or rewritten", last.seq)
    point = Checkpoint.sign(*head)
    with transaction.atomic():
        if not _claim(last, point):
            return None  # another run wrote this head, or a newer one, meanwhile
        _write_out(point)  # inside the claim: if the file cannot be written, the claim rolls back
    return point


def _claim(last: AuditCheckpoint, point: Checkpoint) -> bool:
    return bool(
        AuditCheckpoint.objects.filter(id=1, seq=last.seq, hash=last.hash).update(seq=point.seq, hash=point.hash, written_at=timezone.now())
    )


def _write_out(point: Checkpoint) -> None:
    line = point.line()
    # The log line first: it reaches the operator's log shipping even when the file cannot be written.
    log.info("audit checkpoint %s", line, extra={"audit_checkpoint": point.fields()})
    path = settings.SENTINEL["AUDIT_CHECKPOINT_FILE"]
    if path:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("a", encoding="utf-8") as out:
            out.write(line + "\n")
            out.flush()
            os.fsync(out.fileno())


# --- purging a prefix (data lifecycle) ------------------------------------------------------------
BASE_TYPE = "sentinel.audit.base"


def base_signature(seq: int, hash: str, at: str) -> str:
    message = json.dumps({"seq": seq, "hash": hash, "at": at}, sort_keys=True, separators=(",", ":"))
    return hmac.new(_key().encode(), f"{BASE_TYPE}\n{message}".encode(), hashlib.sha256).hexdigest()


def purge_prefix(through_seq: int, batch: int = 5000) -> int:
    """Delete the entries up to `through_seq`, oldest first in batches of `batch`, after signing their
    end as the chain's new start (AuditBase, also written out like a checkpoint): the chain verifies
    at every moment of the purge and after it. Returns the entries deleted."""
    base = AuditBase.objects.filter(id=1).first()
    if base is not None and through_seq <= base.seq:
        through_seq = base.seq  # already purged that far: only the leftovers of an interrupted purge go
    else:
        last = AuditEntry.objects.filter(seq=through_seq).values_list("hash", flat=True).first()
        if last is None:
            raise ValueError(f"no audit entry {through_seq} to purge through")
        at = timezone.now().isoformat(timespec="seconds")
        signed = {"seq": through_seq, "hash": last, "at": at, "sig": base_signature(through_seq, last, at)}
        with transaction.atomic():
            # Only forwards: a purge never moves the start back (the entries before it are gone).
            moved = AuditBase.objects.filter(id=1, seq__lt=through_seq).update(**signed)
            if not moved and not AuditBase.objects.filter(id=1).exists():
                AuditBase.objects.create(id=1, **signed)
        log.info("audit purge base %s", json.dumps({"type": BASE_TYPE, **signed}), extra={"audit_base": signed})
    deleted = 0
    table = connections["default"].ops.quote_name(AuditEntry._meta.db_table)
    while True:
        with connections["default"].cursor() as cursor:
            cursor.execute(
                f"DELETE FROM {table} WHERE seq IN (SELECT seq FROM {table} WHERE seq <= %s ORDER BY seq LIMIT %s)", [through_seq, batch]
            )
            deleted += cursor.rowcount
            if cursor.rowcount < batch:
                return deleted


@dataclass
class Anchors:
    """What a checkpoint file (or a shipped log) holds: authentic checkpoints by seq, and its problems."""

    by_seq: dict[int, Checkpoint] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    ignored: int = 0


def read_checkpoints(lines: Iterable[str], source: str = "") -> Anchors:
    """Parse checkpoint lines: the checkpoint file's own, or log lines (text or JSON) that carry one.

    A line whose signature does not verify is reported and not trusted; lines that carry no
    checkpoint at all (other log lines) are counted and skipped.
    """
    anchors = Anchors()
    where = f"{source}:" if source else "line "
    for number, line in enumerate(lines, 1):
        raw = _checkpoint_object(line)
        if raw is None:
            anchors.ignored += 1
            continue
        point = _parse(raw)
        if point is None:
            anchors.problems.append(f"{where}{number}: a malformed checkpoint, not trusted")
        elif not point.is_authentic():
            anchors.problems.append(f"{where}{number}: a checkpoint with a bad signature (forged, or signed with another key), not trusted")
        elif anchors.by_seq.setdefault(point.seq, point).hash != point.hash:
            anchors.problems.append(f"{where}{number}: two signed checkpoints disagree on sequence number {point.seq}")
    return anchors


def _checkpoint_object(line: str) -> dict | None:
    line = line.strip()
    if CHECKPOINT_TYPE not in line:
        return None
    try:
        whole = json.loads(line)
    except ValueError:
        whole = None
    if isinstance(whole, dict):
        if whole.get("type") == CHECKPOINT_TYPE:
            return whole
        if isinstance(whole.get("audit_checkpoint"), dict):  # a JSON log record (sentinel_site.logs)
            return whole["audit_checkpoint"]
    decoder = json.JSONDecoder()
    start = line.find("{")
    while start != -1:  # a text log line: the checkpoint is the JSON object in its message
        try:
            found, _ = decoder.raw_decode(line, start)
        except ValueError:
            found = None
        if isinstance(found, dict) and found.get("type") == CHECKPOINT_TYPE:
            return found
        start = line.find("{", start + 1)
    return {}  # names a checkpoint but holds none readable: malformed


def _parse(raw: dict) -> Checkpoint | None:
    seq, hash_, at, sig = raw.get("seq"), raw.get("hash"), raw.get("at"), raw.get("sig")
    if not (isinstance(seq, int) and not isinstance(seq, bool) and seq >= 1):
        return None
    if not (isinstance(hash_, str) and isinstance(at, str) and isinstance(sig, str)):
        return None
    return Checkpoint(seq=seq, hash=hash_, at=at, sig=sig)


# --- upgrading ------------------------------------------------------------------------------------
def rechain(entry_model: HistoricalModel, head_model: HistoricalModel, *, old: Hasher, new: Hasher) -> tuple[int, int | None]:
    """Re-hash the whole chain from `old` to `new` under the head's lock; (entries, first bad seq under `old`).

    Used by the migration that keys the chain (with the migration's historical models). It checks the
    chain under the old hasher as it goes, so damage done before is reported, never silently vouched
    for; a missing entry stays missing (sequence numbers are not renumbered).
    """
    head = head_model.objects.select_for_update().filter(id=1).first()
    count, first_bad = 0, None
    expected_seq, old_prev, new_prev = 1, GENESIS, GENESIS
    batch: list[tuple[int, str, str]] = []
    for entry in entry_model.objects.order_by("seq").iterator(chunk_size=2000):
        text = canonical(entry)
        intact = entry.seq == expected_seq and entry.prev_hash == old_prev and old(entry.prev_hash, text) == entry.hash
        if not intact and first_bad is None:
            first_bad = min(expected_seq, entry.seq)
        expected_seq, old_prev = entry.seq + 1, entry.hash
        entry.prev_hash, entry.hash = new_prev, new(new_prev, text)
        new_prev = entry.hash
        batch.append((entry.seq, entry.prev_hash, entry.hash))
        count += 1
        if len(batch) == 1000:
            _rewrite_hashes(entry_model, batch)
            batch = []
    _rewrite_hashes(entry_model, batch)
    last_seq = expected_seq - 1
    if head is not None and (head.seq != last_seq or head.hash != old_prev) and first_bad is None:
        first_bad = last_seq + 1  # the old chain had lost its end
    if head is not None or count:
        head_model.objects.update_or_create(id=1, defaults={"seq": last_seq, "hash": new_prev})
    return count, first_bad


def _rewrite_hashes(entry_model: HistoricalModel, rows: list[tuple[int, str, str]]) -> None:
    """One UPDATE ... FROM (VALUES ...) per batch: bulk_update's CASE per row grows with the batch squared."""
    if not rows:
        return
    table = connections[entry_model.objects.db].ops.quote_name(entry_model._meta.db_table)
    values = ", ".join(["(%s::bigint, %s, %s)"] * len(rows))
    with connections[entry_model.objects.db].cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} AS e SET prev_hash = v.prev_hash, hash = v.hash "
            f"FROM (VALUES {values}) AS v(seq, prev_hash, hash) WHERE e.seq = v.seq",
            [value for row in rows for value in row],
        )


def note_rekeyed(entry_model: HistoricalModel, head_model: HistoricalModel, hasher: Hasher, *, entries: int, first_bad: int | None) -> None:
    """Append the entry that records a re-chaining and what the old chain was like (caller holds the head)."""
    head, _ = head_model.objects.select_for_update().get_or_create(id=1)
    data = {"from": "sha256", "to": "hmac-sha256", "entries": entries, "legacy_intact": first_bad is None, "legacy_first_bad": first_bad}
    entry = _entry(entry_model, hasher, seq=head.seq + 1, prev_hash=head.hash, action="audit.rekeyed", actor=MIGRATION, data=data)
    entry.save(force_insert=True)
    head.seq, head.hash = entry.seq, entry.hash
    head.save(update_fields=["seq", "hash"])
