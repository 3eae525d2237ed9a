"""manage.py config validate|explain|apply [FILE]: declarative agents and workflows (runs/config.py).

FILE defaults to SENTINEL_CONFIG_FILE. validate prints every error as FILE:LINE: key: message and
exits 1 if there is one; explain prints what apply would change; apply changes it, audited.
"""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from budgets import audit
from runs import config


class Command(BaseCommand):
    help = "Validate, explain or apply a TOML config of agents and workflows."

    def add_arguments(self, parser) -> None:
        parser.add_argument("action", choices=["validate", "explain", "apply"])
        parser.add_argument("file", nargs="?", help="The TOML file (default: SENTINEL_CONFIG_FILE).")

    def handle(self, *args, action: str, file: str | None, **options) -> None:
        path = file or settings.SENTINEL["CONFIG_FILE"]
        if not path:
            raise CommandError("name a file, or set SENTINEL_CONFIG_FILE")
        try:
            loaded = config.load(path)
        except OSError as error:
            raise CommandError(f"{path}: cannot read it: {error.strerror or error}") from None
        if loaded.errors:
            for error in loaded.errors:
                self.stderr.write(str(error))
            raise CommandError(f"{path}: {len(loaded.errors)} error(s); nothing was changed")
        if action == "validate":
            self.stdout.write(f"{path}: valid")
            return
        changed = config.changes(loaded) if action == "explain" else config.apply(loaded, actor=audit.COMMAND)
        for change in changed:
            self.stdout.write(str(change))
        if action == "explain":
            self.stdout.write("(nothing was changed: `config apply` applies it)")
