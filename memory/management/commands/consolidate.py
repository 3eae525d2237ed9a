"""python manage.py consolidate [--conversation ID] [--dry-run]: run the Dreamer now."""

import json

from django.core.management.base import BaseCommand, CommandError

from agents.models import Conversation
from memory import dreamer, indexing


class Command(BaseCommand):
    help = "Consolidate one conversation (whatever its threshold) or every due one, as the scheduled Dreamer would."

    def add_arguments(self, parser):
        parser.add_argument("--conversation", help="a conversation id; default: every conversation over its threshold")
        parser.add_argument("--dry-run", action="store_true", help="report what would be consolidated; change nothing")

    def handle(self, *args, conversation: str | None, dry_run: bool, **options):
        indexing.index_pending()  # consolidation takes only messages already in long-term memory
        if conversation:
            if not Conversation.objects.filter(id=conversation).exists():
                raise CommandError(f"no conversation {conversation}")
            runs = dreamer.consolidate(conversation, trigger="command", dry_run=dry_run, force=True)
            report = [
                {
                    "status": r.status,
                    "messages": r.message_count,
                    "source_tokens": r.source_tokens,
                    "duration_ms": r.duration_ms,
                    "error": r.error,
                }
                for r in runs
            ]
        else:
            report = dreamer.dream(dry_run=dry_run)
        indexing.index_pending()  # embed the new summaries
        self.stdout.write(json.dumps(report, indent=2, default=str))
