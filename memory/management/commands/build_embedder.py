"""python manage.py build_embedder: export the ONNX model or distill the static one now, not on first use."""

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from memory import embeddings

BUILT = {"onnx": (embeddings.onnx_model, embeddings.onnx_model_name), "static": (embeddings.static_model, embeddings.static_model_name)}


class Command(BaseCommand):
    help = (
        "Build the embedding model SENTINEL_EMBEDDINGS names (onnx: exported from the MiniLM wheel and quantized; "
        "static: distilled from it) into SENTINEL_STATIC_EMBEDDINGS_DIR, offline, if not there."
    )

    def add_arguments(self, parser):
        parser.add_argument("--model", choices=sorted(BUILT), help="build this one instead of the configured one (e.g. in an image)")

    def handle(self, *args, **options):
        kind = options["model"] or settings.SENTINEL["EMBEDDINGS"]
        if kind not in BUILT:
            self.stdout.write(f"SENTINEL_EMBEDDINGS={kind} has nothing to build")
            return
        build, name = BUILT[kind]
        path = build(Path(settings.SENTINEL["STATIC_EMBEDDINGS_DIR"]))
        self.stdout.write(f"{name()} at {path}")
