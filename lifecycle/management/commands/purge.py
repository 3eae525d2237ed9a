"""python manage.py purge [--dry-run]: delete what the retention policies let go (or only list it)."""

from django.core.management.base import BaseCommand
from django.utils import timezone

from lifecycle import retention


class Command(BaseCommand):
    help = (
        "Delete the rows the retention policies let go (SENTINEL_RETAIN_<KIND>_DAYS, and each tenant's own), "
        "in bounded batches; the audit log's purged prefix is signed so verify_audit still passes. "
        "--dry-run lists what would go, table by table, and deletes nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="list what would be deleted; delete nothing")
        parser.add_argument("--batch", type=int, default=None, help="rows per transaction (default SENTINEL_PURGE_BATCH)")

    def handle(self, *args, **options):
        now = timezone.now()
        lines = retention.plan(now) if options["dry_run"] else retention.purge(now, batch=options["batch"])
        verb = "would delete" if options["dry_run"] else "deleted"
        for line in lines:
            who = f"tenant {line.tenant}" if line.tenant else "deployment"
            self.stdout.write(f"{verb} {line.rows} {line.table} ({line.kind}, {who}, older than {line.days} days)")
        total = sum(line.rows for line in lines)
        self.stdout.write(f"{verb} {total} rows in all" if lines else f"nothing to {'delete' if options['dry_run'] else 'purge'}")
