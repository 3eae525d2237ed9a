"""python manage.py build_embedder: distill the static embedding model now, not on first use."""

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from memory import embeddings


class Command(BaseCommand):
    help = "Distill the static embedding model (SENTINEL_EMBEDDINGS=static) into SENTINEL_STATIC_EMBEDDINGS_DIR, offline, if not there."

    def handle(self, *args, **options):
        path = embeddings.static_model(Path(settings.SENTINEL["STATIC_EMBEDDINGS_DIR"]))
        self.stdout.write(f"{embeddings.static_model_name()} at {path}")
