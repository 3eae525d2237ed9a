"""Keep memory embeddings inline in the heap row (STORAGE PLAIN).

pgvector's default storage is EXTERNAL: a row over PostgreSQL's ~2 KB TOAST threshold (the 1,544-byte
vector plus a longer text and its tsvector) has its vector moved to the TOAST table, and every exact
scan then fetches it through the TOAST index, row by row. In the soak's agent (18,008 memories) a
third of the rows were like that; the exact scan of the same rows took p50 29.6 ms with EXTERNAL
storage and 19.3 ms with PLAIN (bench/HISTORY.md row 39). With PLAIN the toaster moves the text
and tsvector out of line first; the vector (fixed size, far under a page) always stays.

The rows already out of line are rewritten (on PostgreSQL 17 and later only those; before 17, which
cannot tell, every row): each is a new row version and a new HNSW entry, seconds per 10,000 rows.
"""

from django.db import migrations

INLINE = """
ALTER TABLE memory_memory ALTER COLUMN embedding SET STORAGE PLAIN;
DO $$
BEGIN
    IF current_setting('server_version_num')::int >= 170000 THEN
        UPDATE memory_memory SET embedding = embedding::real[]::vector WHERE pg_column_toast_chunk_id(embedding) IS NOT NULL;
    ELSE
        UPDATE memory_memory SET embedding = embedding::real[]::vector;
    END IF;
END $$;
"""


class Migration(migrations.Migration):
    dependencies = [("memory", "0006_hybrid_search_facts_progress")]

    operations = [
        migrations.RunSQL(INLINE, "ALTER TABLE memory_memory ALTER COLUMN embedding SET STORAGE EXTERNAL;"),
    ]
