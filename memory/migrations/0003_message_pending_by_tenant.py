from django.db import migrations


class Migration(migrations.Migration):
    """An index on agents_message that serves memory.indexing alone: the messages waiting to be
    embedded, by tenant, oldest first, so an indexing batch can take a share from every tenant
    with pending work (a loose index scan over it finds those tenants) instead of the oldest
    messages of whoever imported most. It lives here, with the only query that uses it; the
    message model does not declare it, so Django's autodetector leaves it alone."""

    dependencies = [
        ("agents", "0003_message_summary_message_token_count_and_more"),
        ("memory", "0002_initial"),
    ]

    operations = [
        migrations.RunSQL(
            "CREATE INDEX IF NOT EXISTS message_pending_by_tenant ON agents_message (tenant_id, created_at) WHERE embedded IS NOT TRUE",
            "DROP INDEX IF EXISTS message_pending_by_tenant",
        )
    ]
