"""python manage.py verify_audit: exit 0 if the audit chain is intact, else name the first bad entry."""

from django.core.management.base import BaseCommand, CommandError

from budgets import audit
from budgets.models import AuditEntry


class Command(BaseCommand):
    help = "Verify the hash chain of the audit log; exits non-zero naming the first bad sequence number."

    def handle(self, *args, **options):
        bad = audit.verify()
        if bad is not None:
            raise CommandError(f"audit log broken at sequence number {bad}")
        self.stdout.write(f"audit log intact: {AuditEntry.objects.count()} entries")
