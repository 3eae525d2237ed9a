"""Each memory remembers the transaction that wrote it (`written_xid`), for the vectors a worker holds.

memory/held_vectors.py keeps a scope's vectors in the worker's memory and scans only what was written
since it read them in PostgreSQL: the memories at or past the snapshot's xmin it read them with,
found by this index. The column is PostgreSQL's alone (the models do not name it): every insert
takes its default, so no writer can forget it. The rows already written read 0, older than any
snapshot.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("memory", "0009_hnsw_for_large_tenants")]

    operations = [
        migrations.RunSQL(
            [
                "ALTER TABLE memory_memory ADD COLUMN written_xid xid8 NOT NULL DEFAULT '0'",
                "ALTER TABLE memory_memory ALTER COLUMN written_xid SET DEFAULT pg_current_xact_id()",
                "CREATE INDEX memory_written_xid ON memory_memory (written_xid)",
            ],
            reverse_sql=["DROP INDEX memory_written_xid", "ALTER TABLE memory_memory DROP COLUMN written_xid"],
        )
    ]
