"""Data lifecycle: which rows each retention policy lets go, and their purge in bounded batches.

Every kind but the audit log is purged per tenant, each tenant at its own policy (RetentionPolicy) or
the deployment's default (SENTINEL_RETAIN_<KIND>_DAYS; 0 keeps forever). `plan()` lists what would go
and `purge()` deletes exactly the rows of the same selections, oldest first, `batch` rows to a
transaction, so a purge never holds long locks and an interrupted one simply goes on next time.

- messages: messages older than the cutoff whose turn is finished (or that have none), with what
  hangs on them (their embedding, by cascade), and summaries older than the cutoff.
- turn events: the replay log of finished turns (the Turn rows stay, with their usage and cost).
- embeddings: long-term memories older than the cutoff (their messages stay), and, deployment-wide
  at the default cutoff, cached embeddings.
- spend: budget windows that closed before the cutoff first (so no window that remains ever loses a
  ledger row it counts: `reconcile_spend` holds at every moment), then the reservations left with no
  window, then their ledger rows (and ledger rows without a reservation) older than the cutoff.
- files: the tenant's uploads and batch output/error files no unfinished batch uses, and the lines
  of batches that ended before the cutoff (lifecycle.files; the Batch rows stay).
- audit: one chain for the deployment, so only a prefix can go: every entry before the first one
  that some policy keeps (a tenant's longer policy holds the prefix back for everyone), purged by
  `budgets.audit.purge_prefix`, which signs the new start so the chain still verifies.

Turn events and the spend ledger are partitioned by time (lifecycle.partitions): a partition older
than every tenant's retention of its kind, all of whose rows the selections hold, is dropped whole
(listed as "<table> partition <name>"); rows elsewhere (the boundary partitions, the default one)
are deleted as above.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Min, Q, QuerySet
from django.utils import timezone

from agents.models import UNFINISHED, Message, TurnEventRecord
from budgets import audit
from budgets.models import AuditEntry, BudgetWindow, Period, Reservation, SpendEntry, Tenant
from lifecycle import files, partitions
from lifecycle.models import DataKind, RetentionPolicy
from memory.models import EmbeddingCache, Memory, Summary

log = logging.getLogger(__name__)

DEFAULT_SETTING = {
    DataKind.MESSAGES: "RETAIN_MESSAGES_DAYS",
    DataKind.TURN_EVENTS: "RETAIN_TURN_EVENTS_DAYS",
    DataKind.SPEND: "RETAIN_SPEND_DAYS",
    DataKind.AUDIT: "RETAIN_AUDIT_DAYS",
    DataKind.EMBEDDINGS: "RETAIN_EMBEDDINGS_DAYS",
    DataKind.FILES: "RETAIN_FILES_DAYS",
}


@dataclass(frozen=True)
class Selection:
    """One table's rows a policy lets go: for one tenant (None: deployment-wide) and kind."""

    kind: str
    table: str
    tenant: str | None
    days: int
    queryset: QuerySet


def default_days(kind: str) -> int:
    return int(settings.SENTINEL[DEFAULT_SETTING[DataKind(kind)]])


def cutoff(days: int, now: datetime) -> datetime:
    return now - timedelta(days=days)


def policies(kind: str) -> dict[str, int]:
    """{tenant id: days} of the tenants whose own policy replaces the default for `kind`."""
    return {str(t): d for t, d in RetentionPolicy.objects.filter(kind=kind).values_list("tenant_id", "days")}


def tenant_days(kind: str) -> Iterator[tuple[str, str, int]]:
    """(tenant id, tenant name, days) for every tenant, by its policy or the default."""
    own, default = policies(kind), default_days(kind)
    for tenant_id, name in Tenant.objects.order_by("name").values_list("id", "name"):
        yield str(tenant_id), name, own.get(str(tenant_id), default)


# --- the selections, per kind ---------------------------------------------------------------------
def _messages(tenant: str, since: datetime, memories_since: datetime | None) -> list[tuple[str, QuerySet]]:
    """Summaries and messages, and first the memories that embed them (a message's memory would go
    with it by cascade; listed here, a dry run counts it), but those the embeddings policy takes."""
    messages = Message.objects.filter(tenant_id=tenant, created_at__lt=since).exclude(turn__status__in=UNFINISHED)
    summaries = Summary.objects.filter(tenant_id=tenant, created_at__lt=since)
    theirs = Memory.objects.filter(Q(message__in=messages) | Q(summary__in=summaries))
    if memories_since is not None:
        theirs = theirs.exclude(created_at__lt=memories_since)
    return [("memories of those", theirs), ("summaries", summaries), ("messages", messages)]


def _turn_events(tenant: str, since: datetime, _: datetime | None = None) -> list[tuple[str, QuerySet]]:
    events = TurnEventRecord.objects.filter(turn__tenant_id=tenant, created_at__lt=since).exclude(turn__status__in=UNFINISHED)
    return [("turn events", events)]


def _embeddings(tenant: str, since: datetime, _: datetime | None = None) -> list[tuple[str, QuerySet]]:
    return [("memories", Memory.objects.filter(tenant_id=tenant, created_at__lt=since))]


def _month_start(day: date) -> date:
    return day.replace(day=1)


def closed_windows(since: datetime) -> Q:
    """Budget windows that ended before `since` (a day early for daily ones, a month for monthly:
    never one that might still be open)."""
    day = since.date()
    last_monthly = _month_start(_month_start(day) - timedelta(days=1))
    return Q(budget__period=Period.DAILY, starts__lt=day - timedelta(days=1)) | Q(budget__period=Period.MONTHLY, starts__lt=last_monthly)


def _spend(tenant: str, since: datetime, _: datetime | None = None) -> list[tuple[str, QuerySet]]:
    windows = BudgetWindow.objects.filter(budget__tenant_id=tenant).filter(closed_windows(since))
    open_windows = BudgetWindow.objects.filter(budget__tenant_id=tenant).exclude(closed_windows(since))
    reservations = (
        Reservation.objects.filter(tenant_id=tenant, created_at__lt=since)
        .exclude(status=Reservation.Status.HELD)
        .exclude(windows__in=open_windows)
    )
    entries = SpendEntry.objects.filter(tenant_id=tenant, created_at__lt=since).filter(
        Q(reservation__isnull=True) | Q(reservation__in=reservations)
    )
    return [("budget windows", windows), ("spend entries", entries), ("reservations", reservations)]


def _files(tenant: str, since: datetime, _: datetime | None = None) -> list[tuple[str, QuerySet]]:
    return files.selections(tenant, since)


# In the order a purge deletes them: memories before the messages they embed.
PER_TENANT: dict[str, Callable[[str, datetime, datetime | None], list[tuple[str, QuerySet]]]] = {
    DataKind.EMBEDDINGS: _embeddings,
    DataKind.MESSAGES: _messages,
    DataKind.TURN_EVENTS: _turn_events,
    DataKind.SPEND: _spend,
    DataKind.FILES: _files,
}


def selections(now: datetime | None = None) -> list[Selection | Drop]:
    """Every table's rows that the policies let go now, in the order a purge deletes them: table by
    table within a kind, a partitioned table's whole partitions (Drop) before its rows elsewhere."""
    now = now or timezone.now()
    found: list[Selection | Drop] = []
    memory_days = dict((tenant, days) for tenant, _name, days in tenant_days(DataKind.EMBEDDINGS))
    for kind, select in PER_TENANT.items():
        by_table: dict[str, list[Selection]] = {}
        for tenant, _name, days in tenant_days(kind):
            if days:
                memories_since = cutoff(memory_days[tenant], now) if memory_days.get(tenant) else None
                for table, qs in select(tenant, cutoff(days, now), memories_since):
                    by_table.setdefault(table, []).append(Selection(kind, table, tenant, days, qs))
        for chosen in by_table.values():
            drops = partition_drops(kind, chosen, now)
            found += drops
            found += [replace(s, queryset=s.queryset.exclude(_within(drops))) for s in chosen] if drops else chosen
    days = default_days(DataKind.EMBEDDINGS)
    if days:
        found.append(
            Selection(DataKind.EMBEDDINGS, "embedding cache", None, days, EmbeddingCache.objects.filter(created_at__lt=cutoff(days, now)))
        )
    return found


# --- whole partitions ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Drop:
    """A time partition every row of which the policies let go: dropped whole, not deleted by rows."""

    kind: str
    table: str
    parent: str
    partition: partitions.Partition
    days: int
    rows: int


def _within(drops: list[Drop]) -> Q:
    ranges = Q()
    for drop in drops:
        ranges |= Q(created_at__gte=drop.partition.starts, created_at__lt=drop.partition.ends)
    return ranges


def _selected_in(chosen: list[Selection], partition: partitions.Partition) -> int:
    return sum(s.queryset.filter(created_at__gte=partition.starts, created_at__lt=partition.ends).count() for s in chosen)


def partition_drops(kind: str, chosen: list[Selection], now: datetime) -> list[Drop]:
    """The partitions of a partitioned table older than every tenant's retention of `kind` whose rows
    are all in the tenants' selections (no unfinished turn's event, no ledger row an open window
    counts): those go whole. The partial ones at the boundary, and the default partition, go by rows."""
    parent = chosen[0].queryset.model._meta.db_table
    longest = [days for _tenant, _name, days in tenant_days(kind)]
    if parent not in partitions.TABLES or not longest or 0 in longest:
        return []  # someone keeps this kind forever: no partition is ever all theirs to drop
    with connection.cursor() as cursor:
        if not partitions.is_partitioned(cursor, parent):
            return []
        older = [p for p in partitions.partitions(cursor, parent) if p.ends <= cutoff(max(longest), now)]
        counted = [(p, partitions.rows(cursor, p.name)) for p in older]
    table = f"{chosen[0].table} partition"
    return [Drop(kind, table, parent, p, max(longest), rows) for p, rows in counted if rows and rows == _selected_in(chosen, p)]


def audit_through(now: datetime | None = None) -> int:
    """The last sequence number of the audit prefix the policies let go (0: none)."""
    now = now or timezone.now()
    own, default = policies(DataKind.AUDIT), default_days(DataKind.AUDIT)
    firsts = []  # the first entry each group must keep
    others = AuditEntry.objects.exclude(tenant_id__in=list(own))
    firsts.append((others.filter(created_at__gte=cutoff(default, now)) if default else others).aggregate(first=Min("seq"))["first"])
    for tenant, days in own.items():
        mine = AuditEntry.objects.filter(tenant_id=tenant)
        firsts.append((mine.filter(created_at__gte=cutoff(days, now)) if days else mine).aggregate(first=Min("seq"))["first"])
    kept = [seq for seq in firsts if seq is not None]
    # nothing to keep: everything up to the head goes
    newest = AuditEntry.objects.order_by("-seq").values_list("seq", flat=True).first() or 0
    through = min(kept) - 1 if kept else newest
    base = audit.AuditBase.objects.filter(id=1).values_list("seq", flat=True).first() or 0
    through = max(through, base)  # never behind the signed start: what an interrupted purge left goes too
    return through if AuditEntry.objects.filter(seq__lte=through).exists() else 0


# --- what a purge would do, and the purge ---------------------------------------------------------
@dataclass(frozen=True)
class Line:
    kind: str
    table: str
    tenant: str | None
    days: int
    rows: int


def plan(now: datetime | None = None) -> list[Line]:
    """What `purge` would delete now, table by table (only tables with rows to go)."""
    now = now or timezone.now()
    lines = [_line(step, step.rows if isinstance(step, Drop) else step.queryset.count()) for step in selections(now)]
    through = audit_through(now)
    if through:
        rows = AuditEntry.objects.filter(seq__lte=through).count()
        lines.append(Line(DataKind.AUDIT, f"audit entries <= {through}", None, default_days(DataKind.AUDIT), rows))
    return [line for line in lines if line.rows]


def _line(step: Selection | Drop, rows: int) -> Line:
    if isinstance(step, Drop):
        return Line(step.kind, f"{step.table} {step.partition.name}", None, step.days, rows)
    return Line(step.kind, step.table, step.tenant, step.days, rows)


def _drop(step: Drop) -> int:
    """Drop the partition if it still holds only what the policies let go (else its rows go by the
    per-tenant deletes that follow, which were computed without it: nothing more than listed)."""
    with transaction.atomic(), connection.cursor() as cursor:
        rows = partitions.rows(cursor, step.partition.name)
        if rows != step.rows:
            log.warning("partition %s changed since it was listed; not dropped", step.partition.name)
            return 0
        partitions.drop(cursor, step.parent, step.partition.name)
    return rows


def _delete_in_batches(queryset: QuerySet, batch: int) -> int:
    """One pass over the selection in primary-key order (each batch starts after the last one's
    key, so no batch walks again over rows an earlier one read), `batch` rows to a transaction."""
    deleted, after = 0, None
    while True:
        with transaction.atomic():
            page = queryset.order_by("pk") if after is None else queryset.filter(pk__gt=after).order_by("pk")
            ids = list(page.values_list("pk", flat=True)[:batch])
            if not ids:
                return deleted
            after = ids[-1]
            # The model's own manager, so Django's cascades and SET NULLs (embeddings of a message,
            # a turn's output) run; turn events are deleted as rows (their instances refuse it).
            queryset.model._base_manager.filter(pk__in=ids).delete()
            deleted += len(ids)


def purge(now: datetime | None = None, batch: int | None = None) -> list[Line]:
    """Delete what `plan(now)` lists, `batch` rows to a transaction; the lines of what went."""
    now = now or timezone.now()
    batch = batch or settings.SENTINEL["PURGE_BATCH"]
    done = []
    for step in selections(now):
        rows = _drop(step) if isinstance(step, Drop) else _delete_in_batches(step.queryset, batch)
        if rows:
            done.append(_line(step, rows))
    for tenant in sorted({line.tenant for line in done if line.tenant}):
        counts = {line.table: line.rows for line in done if line.tenant == tenant}
        audit.record("data.purged", actor=audit.SYSTEM, tenant_id=tenant, data=counts)
    dropped = {line.table: line.rows for line in done if isinstance(line.table, str) and " partition " in line.table}
    if dropped:
        audit.record("data.partitions_dropped", actor=audit.SYSTEM, data=dropped)
    through = audit_through(now)
    if through:
        rows = audit.purge_prefix(through, batch=batch)
        done.append(Line(DataKind.AUDIT, f"audit entries <= {through}", None, default_days(DataKind.AUDIT), rows))
        audit.record("audit.purged", actor=audit.SYSTEM, data={"through_seq": through, "entries": rows})
    if done:
        log.info("purged %d rows", sum(line.rows for line in done), extra={"purged": [vars(line) for line in done]})
    return done
