from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    """Memory.scope (memory/shared.py). The column has a constant default, so adding it rewrites
    nothing; its index is built concurrently, so the memory table (the largest) takes writes meanwhile."""

    atomic = False

    dependencies = [
        ("agents", "0009_agent_has_memories"),
        ("budgets", "0005_audit_keyed_chain"),
        ("memory", "0004_memory_embedding_model"),
    ]

    operations = [
        migrations.AddField(
            model_name="memory",
            name="scope",
            field=models.CharField(blank=True, default="", max_length=100),
        ),
        AddIndexConcurrently(
            model_name="memory",
            index=models.Index(condition=models.Q(("scope", ""), _negated=True), fields=["tenant", "scope"], name="memory_tenant_scope"),
        ),
    ]
