"""python manage.py reembed_memories [--check]: re-embed memories of another embedding model now."""

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Count

from memory import embeddings, indexing
from memory.models import Memory


class Command(BaseCommand):
    help = (
        "Re-embed, with the configured model, the memories another model embedded (after SENTINEL_EMBEDDINGS changed). "
        "Search leaves them out until then; the indexer also does this in the background, a batch at a time."
    )

    def add_arguments(self, parser):
        parser.add_argument("--check", action="store_true", help="count memories per model; exit 1 if any needs re-embedding")

    def handle(self, *args, check: bool, **options):
        model = embeddings.model_name()
        stale = dict(Memory.objects.exclude(embedding_model=model).values_list("embedding_model").annotate(n=Count("id")).order_by())
        for name, count in sorted(stale.items()):
            self.stdout.write(f"{count} memories embedded by {name}")
        if check:
            if stale:
                raise CommandError(f"{sum(stale.values())} memories need re-embedding with {model}")
            self.stdout.write(f"every memory is embedded by {model}")
            return
        done = 0
        while step := indexing.reembed_stale():
            done += step
        self.stdout.write(f"re-embedded {done} memories with {model}")
