"""Time partitions of the turn events and the spend ledger: the hot path's inserts into the parent
still land (in a range partition, or in the default one so none ever fails), the beat creates the
next periods ahead, and a purge drops a partition older than retention whole, deleting rows only
where a partition is not all theirs (the boundary, the default partition, an unfinished turn's)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from django.db import connection
from django.utils import timezone

from agents.models import Turn, TurnEventRecord, TurnStatus
from agents.recorder import insert_events
from budgets import spend
from budgets.models import SpendEntry
from lifecycle import partitions
from lifecycle.models import DataKind, RetentionPolicy
from lifecycle.tasks import ensure_partitions
from tests.lifecycle.test_purge import DAYS_30, OLD, a_turn, dry_run, purge, spent

pytestmark = pytest.mark.django_db

WEEK = timedelta(days=7)


@pytest.fixture
def thirty_days(settings):
    settings.SENTINEL = {**settings.SENTINEL, **DAYS_30}


def where(model, **lookup) -> set[str]:
    """The partitions that hold the rows."""
    ids = list(model.objects.filter(**lookup).values_list("id", flat=True))
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT DISTINCT tableoid::regclass::text FROM {model._meta.db_table} WHERE id = ANY(%s)", [ids])
        return {row[0] for row in cursor.fetchall()}


def old_partition(table: str, when: datetime = OLD) -> partitions.Partition:
    starts = partitions.period_start(when, 7)
    with connection.cursor() as cursor:
        name = partitions.add_range(cursor, table, starts, starts + WEEK)
    return partitions.Partition(name, starts, starts + WEEK)


def exists(table: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [table])
        return cursor.fetchone()[0]


def test_both_tables_are_partitioned_with_the_next_periods_ahead():
    now = datetime.now(UTC)
    with connection.cursor() as cursor:
        for table in partitions.TABLES:
            assert partitions.is_partitioned(cursor, table), f"{table} is a partitioned table"
            assert partitions.partitions(cursor, table)[-1].ends > now + 2 * WEEK, "partitions are made ahead of time"


def test_the_hot_paths_raw_insert_lands_in_this_weeks_partition_and_a_far_future_one_in_the_default(alice):
    turn = a_turn(alice, "hello")
    now = timezone.now()
    events = [
        TurnEventRecord(turn_id=turn.id, seq=7, attempt=1, kind="state", payload={}, created_at=now),
        TurnEventRecord(turn_id=turn.id, seq=8, attempt=1, kind="state", payload={}, created_at=now + timedelta(days=400)),
    ]
    with connection.cursor() as cursor:
        insert_events(cursor, events)
    assert where(TurnEventRecord, turn=turn, seq=7) == {f"agents_turnevent_p{partitions.period_start(now, 7):%Y%m%d}"}
    assert where(TurnEventRecord, turn=turn, seq=8) == {"agents_turnevent_default"}, "no range yet: the default takes it"


def test_a_range_created_after_its_rows_takes_them_out_of_the_default_partition(alice):
    turn = a_turn(alice, "hello")
    TurnEventRecord.objects.filter(turn=turn).update(created_at=timezone.now() + timedelta(days=60))
    assert where(TurnEventRecord, turn=turn) == {"agents_turnevent_default"}
    with connection.cursor() as cursor:
        created = partitions.ensure(cursor, "agents_turnevent", days=7, until=timezone.now() + timedelta(days=70))
    assert created and where(TurnEventRecord, turn=turn) <= set(created)
    assert TurnEventRecord.objects.filter(turn=turn).count() == 2


def test_the_beat_task_makes_a_missing_period_ahead_again_and_nothing_twice():
    with connection.cursor() as cursor:
        newest = partitions.partitions(cursor, "agents_turnevent")[-1]
        partitions.drop(cursor, "agents_turnevent", newest.name)  # as if the beat had not run for a while
    assert newest.name in ensure_partitions()["created"]
    assert ensure_partitions() == {"created": []}, "a second run finds every period there"


def test_the_per_partition_unique_index_still_refuses_a_duplicate_event(alice):
    turn = a_turn(alice, "hello")
    with pytest.raises(Exception, match="duplicate key"):
        TurnEventRecord.objects.create(turn=turn, seq=0, kind="queued")


def test_a_purge_drops_a_partition_older_than_retention_whole_and_deletes_rows_only_outside_it(alice, bob, thirty_days):
    old = old_partition("agents_turnevent")
    whole = [a_turn(alice, f"old {i}", when=OLD) for i in range(2)] + [a_turn(bob, "old", when=OLD)]
    boundary = a_turn(alice, "31 days old", when=timezone.now() - timedelta(days=31))  # the default partition here
    listed = dry_run()
    assert listed[f"turn events partition {old.name} deployment"] == 6
    assert listed[f"turn events tenant {alice.tenant.id}"] == 2, "only the boundary turn's events go by rows"
    assert f"turn events tenant {bob.tenant.id}" not in listed
    assert purge() == listed
    assert not exists(old.name), "the partition is gone"
    assert not TurnEventRecord.objects.filter(turn__in=[*whole, boundary]).exists()
    assert Turn.objects.filter(id__in=[t.id for t in whole]).count() == 3


def test_a_partition_holding_an_unfinished_turns_event_is_not_dropped(alice, thirty_days):
    old = old_partition("agents_turnevent")
    stuck = a_turn(alice, "still running", status=TurnStatus.RUNNING, when=OLD)
    done = a_turn(alice, "done", when=OLD)
    listed = dry_run()
    assert not [key for key in listed if "partition" in key] and listed[f"turn events tenant {alice.tenant.id}"] == 2
    purge()
    assert exists(old.name) and TurnEventRecord.objects.filter(turn=stuck).count() == 2
    assert not TurnEventRecord.objects.filter(turn=done).exists()


def test_a_tenant_keeping_turn_events_forever_keeps_every_partition(alice, bob, thirty_days):
    RetentionPolicy.objects.create(tenant=bob.tenant, kind=DataKind.TURN_EVENTS, days=0)
    old = old_partition("agents_turnevent")
    a_turn(alice, "old", when=OLD)
    kept = a_turn(bob, "old", when=OLD)
    purge()
    assert exists(old.name) and TurnEventRecord.objects.filter(turn=kept).count() == 2


def test_a_ledger_partition_older_than_retention_is_dropped_and_the_counters_still_reconcile(alice, thirty_days):
    old = old_partition("budgets_spendentry")
    long_ago = date.today().replace(day=1) - timedelta(days=150)
    gone = spent(alice, "1.50", when=OLD, window_starts=long_ago.replace(day=1))
    current = spent(alice, "0.25", when=timezone.now(), window_starts=date.today().replace(day=1))
    assert where(SpendEntry, id=gone.id) == {old.name}
    listed = dry_run()
    assert listed[f"spend entries partition {old.name} deployment"] == 1 and f"spend entries tenant {alice.tenant.id}" not in listed
    assert purge() == listed
    assert not exists(old.name) and list(SpendEntry.objects.all()) == [current]
    assert spend.reconcile() == []


def test_the_migration_reverses_and_reapplies_keeping_every_row_and_the_id_sequence(alice):
    turn = a_turn(alice, "hello")
    ids = set(TurnEventRecord.objects.filter(turn=turn).values_list("id", flat=True))
    with connection.cursor() as cursor:
        partitions.unpartition(cursor, "agents_turnevent")
        assert not partitions.is_partitioned(cursor, "agents_turnevent")
        assert set(TurnEventRecord.objects.filter(turn=turn).values_list("id", flat=True)) == ids
        partitions.partition(cursor, "agents_turnevent", days=7)
        assert partitions.is_partitioned(cursor, "agents_turnevent")
    assert set(TurnEventRecord.objects.filter(turn=turn).values_list("id", flat=True)) == ids
    assert TurnEventRecord.objects.create(turn=turn, seq=9, kind="state").id > max(ids), "new ids follow the old ones"
