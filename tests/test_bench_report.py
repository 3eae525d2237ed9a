"""BENCHMARKS.md keeps every section whichever part of the bench ran last (bench/report.py)."""

from bench.report import KEPT, merge, sections_of

ORDER = ["## Targets", "## Throughput", "## Memory"]

PREVIOUS = """# Benchmarks

Written by `make bench` on an earlier day.

## Targets
| target | Sentinel |
| --- | --- |
| p50 | 140 ms |

## Throughput (kept from an earlier run)
| clients | turns/s |
| 50 | 12 |

### What stands in the way
CPU.

## Memory
planted facts 100%

## Before and after (issue 6: measure, find the bottleneck, change, measure again)
the history table
"""


def test_a_run_of_one_part_keeps_every_other_section_from_the_last_file():
    lines = merge(ORDER, {"## Targets": ["## Targets", "| p50 | 5 ms |"]}, PREVIOUS)
    text = "\n".join(lines)

    assert "| p50 | 5 ms |" in text and "140 ms" not in text
    assert f"## Throughput{KEPT}\n| clients | turns/s |" in text
    assert "### What stands in the way\nCPU." in text, "a kept section keeps its subsections"
    assert f"## Memory{KEPT}\nplanted facts 100%" in text
    assert text.count(KEPT) == 2, "a section kept twice is marked once"


def test_a_section_measured_again_loses_its_kept_mark_and_order_is_the_given_one():
    lines = merge(ORDER, {"## Throughput": ["## Throughput", "| 50 | 900 |"], "## Memory": ["## Memory", "new"]}, PREVIOUS)
    headings = [line for line in lines if line.startswith("## ")]

    assert headings == [f"## Targets{KEPT}", "## Throughput", "## Memory"]


def test_the_history_and_unknown_old_sections_are_not_carried_over():
    text = "\n".join(merge(ORDER, {}, PREVIOUS))

    assert "Before and after" not in text, "the history is appended fresh from bench/HISTORY.md each run"
    assert "Written by" not in text


def test_a_fresh_section_missing_from_the_order_is_written_last_not_lost():
    lines = merge(ORDER, {"## New bench": ["## New bench", "figures"]}, "")

    assert lines[-3:] == ["## New bench", "figures", ""]


def test_sections_are_read_back_as_written():
    lines = merge(ORDER, {"## Targets": ["## Targets", "a", "", "b"]}, "")

    assert sections_of("\n".join(lines)) == {"## Targets": "a\n\nb"}
