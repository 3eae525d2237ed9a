"""Run every benchmark and write BENCHMARKS.md. Use `make bench` (it starts what is needed)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sentinel_site.settings")
django.setup()

from bench import memory_bench  # noqa: E402

BASE_DIR = Path(__file__).resolve().parent.parent


def machine() -> str:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), "?"
    )
    mem = next(
        (int(line.split()[1]) // 1024 // 1024 for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")), 0
    )
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=BASE_DIR, capture_output=True, text=True).stdout.strip()
    system = f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    return f"{os.cpu_count()} cores ({cpu}), {mem} GiB RAM, {system}, commit {commit}"


def main() -> int:
    quick = "--quick" in sys.argv
    started = datetime.now(UTC)
    sections = ["# Benchmarks", "", f"Written by `make bench` on {started:%Y-%m-%d %H:%M} UTC. Machine: {machine()}.", ""]
    print("memory benchmark ...", flush=True)
    result = memory_bench.run(
        conversations=2 if quick else 8, messages_each=400 if quick else 1000, consolidation_budget_s=60 if quick else 300
    )
    sections += memory_bench.report(result)
    text = "\n".join(sections) + "\n"
    (BASE_DIR / "BENCHMARKS.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
