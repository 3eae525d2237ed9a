"""Database connection handling shared by the web process and the worker."""

from __future__ import annotations

import atexit
import datetime
import json
import os
import threading
import time
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, TypeVar

import msgspec
from django.conf import settings
from django.db import connection
from django.db.backends.postgresql.base import DatabaseWrapper
from django.db.models import Model
from psycopg import postgres
from psycopg.adapt import Buffer, Loader
from psycopg.types.datetime import TimestamptzLoader
from psycopg.types.json import Json, Jsonb

M = TypeVar("M", bound=Model)


def release_connection() -> None:
    """Hand this thread's connection back to the pool before waiting on something slow.

    Django keeps a thread's connection until the request (or task) ends, so a web request waiting
    for its turn, or a worker thread waiting on the model, held a pooled connection all along: a pool
    of 20 capped each process at 20 turns in flight whatever its concurrency.
    Without a pool, closing would mean reconnecting for every turn, so the connection is kept.
    """
    if connection.settings_dict.get("OPTIONS", {}).get("pool") and not connection.in_atomic_block:
        connection.close()


class UtcTimestamptzLoader(Loader):
    """timestamptz values as aware UTC datetimes, parsed by `datetime.fromisoformat` (C).

    Django loads them through a Python subclass of psycopg's Python loader (its BaseTzLoader), so
    the C loader psycopg[binary] ships is never used, and every result set builds a loader that
    reads the connection's TimeZone and DateStyle again: about 8% of a worker's CPU under py-spy.
    This one gives the same values (Django's `timezone` compared by its create_cursor is UTC too);
    what fromisoformat cannot read (BC dates, infinity) goes to psycopg's own loader, as before.
    """

    timezone = datetime.UTC

    def load(self, data: Buffer) -> datetime.datetime:
        try:
            return datetime.datetime.fromisoformat(bytes(data).decode()).astimezone(datetime.UTC)
        except ValueError:
            return TimestamptzLoader(self.oid, self.connection).load(data).astimezone(datetime.UTC)


def use_fast_timestamps(sender: Any = None, connection: Any = None, **kwargs: Any) -> None:
    """On each new connection (the connection_created signal): load timestamptz with
    UtcTimestamptzLoader, where Django wants aware UTC datetimes (USE_TZ, no database TIME_ZONE)."""
    if connection is None or connection.vendor != "postgresql" or not settings.USE_TZ or connection.settings_dict.get("TIME_ZONE"):
        return
    adapters = connection.connection.adapters
    if adapters.get_loader(_timestamptz_oid(), 0) is not UtcTimestamptzLoader:
        adapters.register_loader("timestamptz", UtcTimestamptzLoader)


@lru_cache(maxsize=1)
def _timestamptz_oid() -> int:
    return postgres.types["timestamptz"].oid


def insert(cursor, instances: Sequence[Model]) -> None:
    """Unsaved instances of one model in one multi-row INSERT, without the ORM's per-statement cost:
    each field's own pre-save value (defaults, auto_now) and database preparation, as save() uses;
    an auto-incremented primary key is left to the database. The instances are marked saved."""
    if not instances:
        return
    fields, statement, row = _insert_shape(type(instances[0]))
    cursor.execute(statement + "VALUES " + ", ".join([row] * len(instances)), _insert_params(instances, fields))
    _mark_saved(instances)


def insert_if(
    instances: Sequence[Model], condition: str, *, computed: dict[str, str] | None = None, also_from: str = ""
) -> tuple[str, list]:
    """`insert`'s statement, to run inside a larger one (a data-modifying CTE): its rows are written
    only if the SQL `condition` holds (a scalar subquery of the statement, say). `computed`: columns
    whose value is an SQL expression over `also_from` (another CTE of the statement, joined to each
    row) instead of the instance's. The rows travel as one JSON parameter, read back into the
    table's row type by `jsonb_populate_recordset` (each value parsed as its column's type): one
    parameter instead of one a value, since psycopg merges each into the statement as a quoted
    literal in Python, and keeps its parse of a statement only up to 50 of them. The instances are
    marked saved: the caller runs the statement or discards them."""
    model = type(instances[0])
    fields, statement, _ = _insert_shape(model)
    computed = computed or {}
    picked = ", ".join(computed.get(field.column, f"v.{connection.ops.quote_name(field.column)}") for field in fields)
    joined = f", {also_from}" if also_from else ""
    table = connection.ops.quote_name(model._meta.db_table)
    sql = f"{statement}SELECT {picked} FROM jsonb_populate_recordset(NULL::{table}, %s::jsonb) AS v{joined} WHERE {condition}"
    plain = _plain_fields(model)
    rows = [
        {
            f.column: value if f.column in plain else f.get_db_prep_save(value, connection)
            for f in fields
            for value in [f.pre_save(obj, add=True)]
        }
        for obj in instances
    ]
    _mark_saved(instances)
    return sql, [json_rows(rows)]


# Fields whose value needs no database preparation to travel as JSON (a JSON field's value nests as
# it is, unless it has an encoder of its own). A Decimal is prepared: Django rounds it to the field's places.
_PLAIN = {
    "BooleanField", "CharField", "DateTimeField", "ForeignKey", "IntegerField", "BigIntegerField", "JSONField",
    "PositiveIntegerField", "PositiveSmallIntegerField", "SmallIntegerField", "TextField", "UUIDField",
}  # fmt: skip


@lru_cache(maxsize=32)
def _plain_fields(model: type[Model]) -> frozenset[str]:
    return frozenset(
        f.column for f in model._meta.concrete_fields if f.get_internal_type() in _PLAIN and getattr(f, "encoder", None) is None
    )


def _json_value(value: Any) -> Any:
    """What msgspec cannot encode by itself: a JSON field's value, as its own dumps writes it,
    subclasses of the plain types, and numpy's arrays and scalars (as lists and numbers)."""
    if isinstance(value, Json | Jsonb):
        return msgspec.Raw((value.dumps or json.dumps)(value.obj))
    for kind in (bool, int, float, str):  # subclasses, such as the Int4 Django wraps an integer in for psycopg
        if isinstance(value, kind):
            return kind(value)
    if callable(getattr(value, "tolist", None)):  # numpy: an embedding read back from pgvector, or its elements
        return value.tolist()
    raise TypeError(f"no JSON form for {type(value).__name__}")


# UUIDs, aware datetimes (RFC 3339) and Decimals (as strings) are msgspec's own; the rest is _json_value's.
_JSON_ROWS = msgspec.json.Encoder(enc_hook=_json_value)


def recordset(alias: str, columns: str, placeholder: str = "%s") -> str:
    """A set of rows sent as one JSON parameter (`json_rows`), for a FROM clause: `columns` are
    "name type, ..." and each row's value for a name is parsed as that type (JSON null is NULL, a
    JSON column takes the value as it nests). The multi-row statements of the turn's path send
    their rows so instead of an array a column: psycopg merges every parameter into the statement as
    a quoted literal, and an array's elements one by one in Python, escaping each (a JSON payload's
    every quote); msgspec writes the whole batch in C (bench/HISTORY.md row 59). `placeholder`:
    a named one (`%(name)s`) for a statement that names its parameters."""
    return f"json_to_recordset({placeholder}::json) AS {alias}({columns})"


def json_rows(rows: Sequence[dict[str, Any]]) -> str:
    """`recordset`'s parameter: each row a dict of its columns' values (UUIDs, aware datetimes,
    Decimals, numbers, strings, None, and dicts or lists for JSON columns)."""
    return _JSON_ROWS.encode(rows).decode()


def _insert_params(instances: Sequence[Model], fields: list) -> list:
    return [f.get_db_prep_save(f.pre_save(obj, add=True), connection) for obj in instances for f in fields]


def _mark_saved(instances: Sequence[Model]) -> None:
    for obj in instances:
        obj._state.adding, obj._state.db = False, connection.alias


@lru_cache(maxsize=32)
def _insert_shape(model: type[Model]) -> tuple[list, str, str]:
    """The fields written, `INSERT INTO table (columns) ` and a row's placeholders."""
    fields = [f for f in model._meta.concrete_fields if not (f.primary_key and f.get_internal_type() in ("AutoField", "BigAutoField"))]
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    table = connection.ops.quote_name(model._meta.db_table)
    return fields, f"INSERT INTO {table} ({columns}) ", "(" + ", ".join(["%s"] * len(fields)) + ")"


def commit_lazily(cursor) -> None:
    """Let this transaction's commit return before its WAL reaches the disk: for writes no client has
    been told of yet. Whatever commits synchronously later (a turn's finish, before its answer is
    sent) flushes them too, since PostgreSQL flushes its WAL in order; a crash of PostgreSQL before
    then loses them, and with them nothing anyone was told."""
    cursor.execute("SELECT set_config('synchronous_commit', 'off', true)")


@lru_cache(maxsize=64)
def columns(model: type[Model], alias: str = "") -> str:
    """The model's columns, in field order, for a hand-written SELECT or RETURNING (`from_row` reads them)."""
    prefix = f"{alias}." if alias else ""
    return ", ".join(prefix + connection.ops.quote_name(field.column) for field in model._meta.concrete_fields)


def from_row(model: type[M], values: Sequence) -> M:
    """An instance from the values of `columns(model)`, converted as the ORM converts what it reads
    (JSON decoded, and the like)."""
    fields = model._meta.concrete_fields
    converted = []
    for field, value in zip(fields, values, strict=True):
        for converter in field.get_db_converters(connection):
            value = converter(value, field, connection)
        converted.append(value)
    return model.from_db(connection.alias, [field.attname for field in fields], converted)


def pool_stats(alias: str = "default") -> dict[str, int] | None:
    """This process's pool of `alias` now: open, checked_out (held by threads) and waiting; None
    before the pool exists (nothing opened it yet) or without one."""
    pool = DatabaseWrapper._connection_pools.get(alias)
    if pool is None:
        return None
    stats = pool.get_stats()
    size, available = stats.get("pool_size", 0), stats.get("pool_available", 0)
    return {"open": size, "checked_out": max(0, size - available), "waiting": stats.get("requests_waiting", 0)}


_watched_pid = [0]
_watch_lock = threading.Lock()


def watch_pool(sender: Any = None, connection: Any = None, **kwargs: Any) -> None:
    """On a process's first connection (the connection_created signal): start the thread that
    samples its pool into the `sentinel_db_pool_connections` gauge (sentinel_site.metrics)."""
    if _watched_pid[0] == os.getpid() or not (connection is not None and connection.settings_dict.get("OPTIONS", {}).get("pool")):
        return
    with _watch_lock:
        if _watched_pid[0] == os.getpid():
            return
        _watched_pid[0] = os.getpid()
        threading.Thread(target=_sample_pool, name="db-pool-gauge", daemon=True).start()
        atexit.register(_forget_process)


def record_pool() -> None:
    """Set this process's `sentinel_db_pool_connections` from its pool now."""
    from sentinel_site import metrics

    stats = pool_stats()
    if stats is not None:
        for state, value in stats.items():
            metrics.DB_POOL.labels(settings.PROCESS, state).set(value)


def _sample_pool() -> None:
    from sentinel_site import metrics

    while True:
        record_pool()
        time.sleep(metrics.DB_POOL_SAMPLE_SECONDS)


def _forget_process() -> None:
    """A process that exits leaves the live gauges' sum (prometheus_client's multiprocess files)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid())
