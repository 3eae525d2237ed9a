#!/usr/bin/env python
import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sentinel_site.settings")
    os.environ.setdefault("SENTINEL_PROCESS", "manage")
    if not os.environ.get("DATABASE_URL"):
        # Next to `make run` (or on its own): the embedded PostgreSQL under var/, started if needed.
        from sentinel_site.stack import attach_embedded

        attach_embedded()
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
