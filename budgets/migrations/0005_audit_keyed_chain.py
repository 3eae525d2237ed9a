"""Key the audit chain: tenant as a plain id, a checkpoint claim row, and every entry re-hashed under the key.

The tenant column keeps its name, type and data (`tenant_id uuid`); only the foreign key goes (it
had no database constraint, and its redundant single-column index goes too: the (tenant_id, seq)
index serves tenant lookups). Existing entries were hashed with plain SHA-256: they are checked
under it, re-hashed with HMAC-SHA256 under SENTINEL_AUDIT_KEY, and an `audit.rekeyed` entry records
how many there were and where the old chain was first broken, if it was. Reversible.
"""

import logging

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

from budgets import audit

log = logging.getLogger(__name__)


def rechain_under_the_key(apps, schema_editor):
    entry, head = apps.get_model("budgets", "AuditEntry"), apps.get_model("budgets", "AuditHead")
    hasher = audit.keyed(settings.SENTINEL["AUDIT_KEY"])
    entries, first_bad = audit.rechain(entry, head, old=audit.legacy_sha256, new=hasher)
    if not entries and first_bad is None:
        return  # a fresh database: nothing to vouch for
    if first_bad is not None:
        log.warning("the SHA-256 audit chain was already broken at sequence number %d before it was keyed", first_bad)
    audit.note_rekeyed(entry, head, hasher, entries=entries, first_bad=first_bad)


def rechain_back_to_sha256(apps, schema_editor):
    entry, head = apps.get_model("budgets", "AuditEntry"), apps.get_model("budgets", "AuditHead")
    audit.rechain(entry, head, old=audit.keyed(settings.SENTINEL["AUDIT_KEY"]), new=audit.legacy_sha256)


class Migration(migrations.Migration):
    dependencies = [
        ("budgets", "0004_apikey_budget_key"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                # Same column; dropping db_index removes only the FK's own index.
                migrations.AlterField(
                    model_name="auditentry",
                    name="tenant",
                    field=models.ForeignKey(
                        blank=True,
                        db_constraint=False,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.DO_NOTHING,
                        related_name="+",
                        to="budgets.tenant",
                    ),
                ),
            ],
            state_operations=[
                migrations.RemoveIndex(model_name="auditentry", name="audit_tenant_seq"),
                migrations.RemoveField(model_name="auditentry", name="tenant"),
                migrations.AddField(
                    model_name="auditentry",
                    name="tenant_id",
                    field=models.UUIDField(blank=True, help_text="The tenant's id (kept after the tenant is deleted).", null=True),
                ),
                migrations.AddIndex(model_name="auditentry", index=models.Index(fields=["tenant_id", "seq"], name="audit_tenant_seq")),
            ],
        ),
        migrations.CreateModel(
            name="AuditCheckpoint",
            fields=[
                ("id", models.PositiveSmallIntegerField(default=1, primary_key=True, serialize=False)),
                ("seq", models.BigIntegerField(default=0)),
                ("hash", models.CharField(default="0000000000000000000000000000000000000000000000000000000000000000", max_length=64)),
                ("written_at", models.DateTimeField(blank=True, null=True)),
            ],
        ),
        migrations.RunPython(rechain_under_the_key, rechain_back_to_sha256),
    ]
