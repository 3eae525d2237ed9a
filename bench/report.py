"""BENCHMARKS.md from sections: a run writes the sections it measured and keeps every other one from
the last file, marked as kept, so the file holds every section whichever part of the bench ran last."""

from __future__ import annotations

KEPT = " (kept from an earlier run)"


def sections_of(text: str) -> dict[str, str]:
    """The `## ` sections of a BENCHMARKS.md by heading (without the kept mark), each with its body."""
    found: dict[str, str] = {}
    for chunk in ("\n" + text).split("\n## ")[1:]:
        heading, _, body = chunk.partition("\n")
        found["## " + heading.removesuffix(KEPT).strip()] = body.rstrip()
    return found


def merge(order: list[str], fresh: dict[str, list[str]], previous: str) -> list[str]:
    """Lines for every heading in `order`: this run's section when it measured it, else the last file's,
    marked as kept; a heading neither has is left out. A fresh section missing from `order` comes last
    rather than being lost."""
    old = sections_of(previous)
    lines: list[str] = []
    for heading in [*order, *(h for h in fresh if h not in order)]:
        if heading in fresh:
            body = fresh[heading]
            lines += [heading, *(body[1:] if body and body[0] == heading else body)]
            if lines[-1] != "":
                lines.append("")
        elif heading in old:
            lines += [heading + KEPT, old[heading], ""]
    return lines
