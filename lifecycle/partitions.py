"""Time partitions of the append-heavy tables: `PARTITION BY RANGE (created_at)`, so a purge drops a
partition instead of deleting its rows one by one.

Two tables are partitioned (by migrations agents 0012 and budgets 0007): the turn events (the
replay log, the largest table per turn) and the spend ledger. Each has fixed-width partitions of
SENTINEL_PARTITION_DAYS days, aligned on EPOCH, named `<table>_pYYYYMMDD` by their first day, and a
`<table>_default` partition that takes any row no range holds, so an insert never fails, whatever
its time. The beat's `ensure` keeps partitions PARTITION_AHEAD periods ahead; a range that is
created later than its rows (they wait in the default partition) takes its rows with it.

What partitioning costs, and why it is safe here:
- A partitioned table's primary key must hold the partition key: it is (id, created_at) in the
  database. Django still addresses rows by `id` (its model keeps `id` as the primary key: the admin
  and the ORM do not support composite keys everywhere yet), which stays unique because every id
  comes from one sequence and no row is ever given one by hand.
- A unique constraint must hold the partition key too, so the tables' own (`turn_event_seq_unique`,
  a ledger row per reservation) are unique indexes on each partition. A turn's events all fall in
  one partition unless a turn straddles a boundary, and both rules are first enforced by their
  writers (an attempt's fenced numbering; a reservation settled once by its claim): the indexes are
  the backstop, as they were.
- Nothing has a foreign key to these tables, so no constraint needs a unique target in them.
- The audit log is not partitioned: its purge is a prefix of the chain by `seq`, while `created_at`
  is only roughly in `seq` order (it is set before the chain's lock is taken), and its `hash` must be
  unique across the whole log; a partition could split the prefix. It is also the smallest per turn.

This module holds SQL only (no models), so migrations can use it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

EPOCH = date(2000, 1, 3)  # a Monday: weekly partitions start on Mondays
PARTITION_AHEAD = 3  # periods created ahead of now
MIGRATED_PERIODS = 60  # at most this many periods back are made partitions when a table is migrated


@dataclass(frozen=True)
class Spec:
    """A partitioned table and the unique constraints it had, kept as unique indexes per partition."""

    table: str
    unique: tuple[tuple[str, str], ...]  # (constraint name on the unpartitioned table, its columns)


TABLES = {
    "agents_turnevent": Spec("agents_turnevent", (("turn_event_seq_unique", "turn_id, attempt, seq"),)),
    "budgets_spendentry": Spec("budgets_spendentry", (("budgets_spendentry_reservation_id_key", "reservation_id"),)),
}


@dataclass(frozen=True)
class Partition:
    name: str
    starts: datetime
    ends: datetime


def period_start(moment: datetime, days: int) -> datetime:
    """The start of the aligned period of `days` days that holds `moment` (UTC midnight)."""
    offset = (moment.astimezone(UTC).date() - EPOCH).days // days * days
    return datetime.combine(EPOCH + timedelta(days=offset), datetime.min.time(), tzinfo=UTC)


def is_partitioned(cursor, table: str) -> bool:
    cursor.execute("SELECT relkind = 'p' FROM pg_class WHERE oid = to_regclass(%s)", [table])
    row = cursor.fetchone()
    return bool(row and row[0])


_BOUND = re.compile(r"FROM \('([^']+)'\) TO \('([^']+)'\)")


def _timestamp(text: str) -> datetime:
    if re.search(r"[+-]\d\d$", text):  # PostgreSQL prints a whole-hour offset as +00
        text += ":00"
    return datetime.fromisoformat(text).astimezone(UTC)


def partitions(cursor, table: str) -> list[Partition]:
    """The range partitions of `table`, oldest first (not its default partition)."""
    cursor.execute(
        """
        SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = to_regclass(%s)
        """,
        [table],
    )
    found = []
    for name, bound in cursor.fetchall():
        match = _BOUND.search(bound)
        if match:
            found.append(Partition(name, _timestamp(match[1]), _timestamp(match[2])))
    return sorted(found, key=lambda p: p.starts)


def _unique_indexes(cursor, spec: Spec, partition: str) -> None:
    for n, (_name, columns) in enumerate(spec.unique):
        cursor.execute(f"CREATE UNIQUE INDEX IF NOT EXISTS {partition}_u{n} ON {partition} ({columns})")


def add_range(cursor, table: str, starts: datetime, ends: datetime) -> str:
    """A new range partition, with the rows the default partition held for its range."""
    spec = TABLES[table]
    name = f"{spec.table}_p{starts:%Y%m%d}"
    default = f"{spec.table}_default"
    cursor.execute(f"CREATE TABLE {name} (LIKE {spec.table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
    cursor.execute(
        f"WITH moved AS (DELETE FROM {default} WHERE created_at >= %s AND created_at < %s RETURNING *) "
        f"INSERT INTO {name} SELECT * FROM moved",
        [starts, ends],
    )
    cursor.execute(f"ALTER TABLE {spec.table} ATTACH PARTITION {name} FOR VALUES FROM (%s) TO (%s)", [starts, ends])
    _unique_indexes(cursor, spec, name)
    return name


def ensure(cursor, table: str, *, days: int, until: datetime, since: datetime | None = None) -> list[str]:
    """Partitions of `days` days covering up to `until` (from `since`, or on from the newest one, or
    from now's period), and the default partition; the names of those it created. Call it inside a
    transaction: concurrent callers queue on an advisory lock."""
    spec = TABLES[table]
    cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"sentinel:partitions:{table}"])
    created = []
    cursor.execute("SELECT to_regclass(%s) IS NULL", [f"{table}_default"])
    if cursor.fetchone()[0]:
        cursor.execute(f"CREATE TABLE {table}_default PARTITION OF {table} DEFAULT")
        _unique_indexes(cursor, spec, f"{table}_default")
    existing = partitions(cursor, table)
    starts = existing[-1].ends if existing else period_start(since or datetime.now(UTC), days)
    while starts <= until:
        # a later width starts where the last partition ends; it is not realigned
        ends = starts + timedelta(days=days)
        created.append(add_range(cursor, table, starts, ends))
        starts = ends
    return created


def ensure_all(cursor, *, days: int, now: datetime | None = None) -> list[str]:
    """Every partitioned table's partitions, PARTITION_AHEAD periods past `now`."""
    until = (now or datetime.now(UTC)) + timedelta(days=days * PARTITION_AHEAD)
    created = []
    for table in TABLES:
        if is_partitioned(cursor, table):
            created += ensure(cursor, table, days=days, until=until)
    return created


def rows(cursor, partition: str) -> int:
    cursor.execute(f"SELECT count(*) FROM {partition}")
    return int(cursor.fetchone()[0])


def _checked_first(cursor) -> None:
    """A table with foreign-key checks still pending in this transaction cannot be dropped or
    altered: run them now (Django's keys are deferred to the commit); the caller defers them again."""
    cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")


def drop(cursor, table: str, partition: str) -> None:
    """Detach and drop one range partition (a short exclusive lock on the parent)."""
    _checked_first(cursor)
    cursor.execute(f"ALTER TABLE {table} DETACH PARTITION {partition}")
    cursor.execute(f"DROP TABLE {partition}")
    cursor.execute("SET CONSTRAINTS ALL DEFERRED")


# --- the migrations: partition a table, and back -----------------------------------------------------
def _indexes(cursor, table: str, unique: bool) -> list[str]:
    """CREATE INDEX statements of the table's plain (or unique) indexes, but its primary key's."""
    cursor.execute(
        """
        SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i
        WHERE i.indrelid = to_regclass(%s) AND NOT i.indisprimary AND i.indisunique = %s ORDER BY i.indexrelid
        """,
        [table, unique],
    )
    return [row[0].replace(" ON ONLY ", " ON ") for row in cursor.fetchall()]


def _foreign_keys(cursor, table: str) -> list[tuple[str, str]]:
    cursor.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = to_regclass(%s) AND contype = 'f'", [table]
    )
    return cursor.fetchall()


def _copy_into_new(cursor, table: str, partition_by: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Rename `table` aside, create its empty twin (partitioned or not) under its name, and return the
    old one's plain indexes and foreign keys to put back once the old table is gone."""
    indexes, keys = _indexes(cursor, table, unique=False), _foreign_keys(cursor, table)
    _checked_first(cursor)
    cursor.execute(f"ALTER TABLE {table} RENAME TO {table}_old")
    cursor.execute(f"CREATE TABLE {table} (LIKE {table}_old INCLUDING DEFAULTS INCLUDING CONSTRAINTS) {partition_by}")
    return indexes, keys


def _finish(cursor, table: str, indexes: list[str], keys: list[tuple[str, str]]) -> None:
    cursor.execute(f"INSERT INTO {table} SELECT * FROM {table}_old")
    cursor.execute(f"DROP TABLE {table}_old CASCADE")  # its indexes, constraints and id sequence
    for statement in indexes:
        cursor.execute(statement)
    for name, definition in keys:
        cursor.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}")
    cursor.execute("SET CONSTRAINTS ALL DEFERRED")


def partition(cursor, table: str, *, days: int) -> None:
    """Migrate `table` into a partitioned twin: partitions for the time its rows span and ahead,
    the rows copied, the names swapped, its indexes, keys and id sequence put back. One transaction."""
    cursor.execute(f"SELECT min(created_at), coalesce(max(id), 0) FROM {table}")
    oldest, last_id = cursor.fetchone()
    indexes, keys = _copy_into_new(cursor, table, "PARTITION BY RANGE (created_at)")
    now = datetime.now(UTC)
    # rows older than MIGRATED_PERIODS periods wait in the default partition (their purge deletes rows)
    since = max(oldest or now, now - timedelta(days=days * MIGRATED_PERIODS))
    ensure(cursor, table, days=days, since=since, until=now + timedelta(days=days * PARTITION_AHEAD))
    _finish(cursor, table, indexes, keys)
    cursor.execute(f"ALTER TABLE {table} ADD CONSTRAINT {table}_pkey PRIMARY KEY (id, created_at)")
    cursor.execute(f"CREATE SEQUENCE {table}_id_seq OWNED BY {table}.id")
    cursor.execute(f"SELECT setval('{table}_id_seq', %s, %s)", [max(last_id, 1), last_id > 0])
    cursor.execute(f"ALTER TABLE {table} ALTER COLUMN id SET DEFAULT nextval('{table}_id_seq')")


def unpartition(cursor, table: str) -> None:
    """The reverse of `partition`: one plain table again, with its identity id and unique constraints."""
    spec = TABLES[table]
    cursor.execute(f"SELECT coalesce(max(id), 0) FROM {table}")
    last_id = cursor.fetchone()[0]
    indexes, keys = _copy_into_new(cursor, table, "")
    cursor.execute(f"ALTER TABLE {table} ALTER COLUMN id DROP DEFAULT")
    _finish(cursor, table, indexes, keys)  # the old table's CASCADE takes its partitions and sequence
    cursor.execute(f"ALTER TABLE {table} ADD CONSTRAINT {table}_pkey PRIMARY KEY (id)")
    cursor.execute(f"ALTER TABLE {table} ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY")
    cursor.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), %s, %s)", [max(last_id, 1), last_id > 0])
    for name, columns in spec.unique:
        cursor.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} UNIQUE ({columns})")
