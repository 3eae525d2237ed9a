"""Turn events become a table partitioned by time (PARTITION BY RANGE (created_at)): the rows are
copied into the partitioned twin and the names swapped, in one transaction; reversible.

The model does not change: lifecycle/partitions.py says why `id` stays Django's primary key while
the database's is (id, created_at), and why `turn_event_seq_unique` is a unique index per partition.
A later migration that alters that constraint by name must go through lifecycle.partitions."""

from django.conf import settings
from django.db import migrations

from lifecycle import partitions

TABLE = "agents_turnevent"


def forward(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        partitions.partition(cursor, TABLE, days=settings.SENTINEL["PARTITION_DAYS"])


def backward(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        partitions.unpartition(cursor, TABLE)


class Migration(migrations.Migration):
    dependencies = [("agents", "0012_turn_created_brin")]

    operations = [migrations.RunPython(forward, backward, elidable=False)]
