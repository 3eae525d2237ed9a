"""The HNSW index holds only the memories of tenants that need it (memory/hnsw.py).

Every memory entered the index when written: about 1 ms of PostgreSQL's CPU a row, against 0.05 ms
for all the other indexes together (bench/HISTORY.md row 69), while a search reads the index only
past SENTINEL_EXACT_SEARCH_MAX scoped memories. Now a memory enters it once its tenant has such a
scope (`in_hnsw`, the index partial on it).

The rows already written are all in the index: the column is added true for them (PostgreSQL stores
the default once, no table rewrite), then defaults to false for new ones. The index is built again
as a partial index of the same rows: on a large table this takes as long as building it did.
"""

import django.db.models.deletion
import django.utils.timezone
import pgvector.django.indexes
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("budgets", "0001_initial"), ("memory", "0008_embedding_cache_per_tenant")]

    operations = [
        migrations.AddField(model_name="memory", name="in_hnsw", field=models.BooleanField(default=True)),
        migrations.AlterField(model_name="memory", name="in_hnsw", field=models.BooleanField(default=False)),
        migrations.RemoveIndex(model_name="memory", name="memory_embedding_hnsw"),
        migrations.AddIndex(
            model_name="memory",
            index=pgvector.django.indexes.HnswIndex(
                condition=models.Q(in_hnsw=True),
                ef_construction=64,
                fields=["embedding"],
                m=16,
                name="memory_embedding_hnsw",
                opclasses=["vector_cosine_ops"],
            ),
        ),
        migrations.AddIndex(model_name="memory", index=models.Index(fields=["tenant", "in_hnsw"], name="memory_tenant_in_hnsw")),
        migrations.CreateModel(
            name="HnswTenant",
            fields=[
                (
                    "tenant",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="+",
                        serialize=False,
                        to="budgets.tenant",
                    ),
                ),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now, editable=False)),
            ],
            options={"verbose_name": "HNSW tenant"},
        ),
    ]
