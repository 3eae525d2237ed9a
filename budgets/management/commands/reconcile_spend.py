"""python manage.py reconcile_spend: check every budget counter against the spend ledger."""

import json

from django.core.management.base import BaseCommand, CommandError

from budgets import spend


class Command(BaseCommand):
    help = "Compare budget counters with the append-only spend ledger and held reservations; non-zero exit on a mismatch."

    def handle(self, *args, **options):
        problems = spend.reconcile()
        if problems:
            self.stdout.write(json.dumps(problems, indent=2))
            raise CommandError(f"{len(problems)} budget window(s) disagree with the ledger")
        self.stdout.write("budget counters match the ledger")
