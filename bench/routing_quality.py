"""Adaptive routing's quality (issue 19): how often `routing.adaptive.group_for` sends a labelled
request where it belongs (simple -> the cheap group, complex -> the strong one), the share it
sends cheap, what that costs against sending everything to the strong model, and what a decision
costs in µs. No model and no stack: it is the decision that is measured, in seconds.

The set is bench/routing_prompts.py (hand-labelled). Each rule's threshold is chosen on half the
set (even positions) and reported on the other half too (odd positions, never seen by the choice):
the highest accuracy on the tuning half, ties going to the fewest complex requests sent cheap
(the costly mistake: a weak answer), then to the smaller threshold (the data do not argue for
more).

Prices: the cheap group at the bench stub's price (bench/harness.py: $0.15 in / $0.60 out per
million tokens) and the strong one at $2.50 / $10.00; each request's answer is taken as 150 tokens
when simple and 800 when complex, whichever model gives it (the request decides the work).

    make bench BENCH_ARGS=--only=routing-quality     # this section, written to BENCHMARKS.md
    python -m bench.routing_quality                   # printed only
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, replace

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sentinel_site.settings")
os.environ.setdefault("DATABASE_URL", "postgresql://unused@127.0.0.1:1/unused")
django.setup()

from bench.routing_prompts import Example, examples  # noqa: E402
from routing import adaptive  # noqa: E402
from routing.policy import PolicySpec  # noqa: E402

HEADING = "## Adaptive routing quality (issue 19)"
CHEAP, STRONG = (0.15, 0.60), (2.50, 10.00)  # $ per million tokens in, out
ANSWER_TOKENS = {"simple": 150, "complex": 800}
THRESHOLDS = (25, 40, 50, 60, 70, 80, 90, 100, 150, 200, 300, 500, 1000, 1500, 2000, 3000, 4000, 6000, 8000, 12000, 16000)
BASE = PolicySpec(adaptive=True, simple_group="cheap", complex_group="strong")


@dataclass(frozen=True)
class Score:
    rule: str
    threshold: int
    accuracy: float  # the whole set
    tuning: float  # even positions: what chose the threshold
    held_out: float  # odd positions
    simple_cheap: float  # of the simple requests, the share sent cheap
    complex_strong: float  # of the complex requests, the share sent strong
    cheap_share: float
    cost_share: float  # the routed cost / always-strong's
    complex_sent_cheap: int


def _cost(example: Example, prices: tuple[float, float]) -> float:
    prompt = adaptive.prompt_tokens(example.body()["messages"])
    return (prompt * prices[0] + ANSWER_TOKENS[example.label] * prices[1]) / 1e6


def score(rule: str, spec: PolicySpec, threshold: int, items: list[Example]) -> Score:
    routed = [adaptive.group_for(spec, e.body()) for e in items]
    cheap = [r is not None and r[0] == "cheap" for r in routed]
    right = [is_cheap == (e.label == "simple") for e, is_cheap in zip(items, cheap, strict=True)]
    simple = [c for e, c in zip(items, cheap, strict=True) if e.label == "simple"]
    complex_ = [c for e, c in zip(items, cheap, strict=True) if e.label == "complex"]
    spent = sum(_cost(e, CHEAP if c else STRONG) for e, c in zip(items, cheap, strict=True))
    return Score(
        rule,
        threshold,
        accuracy=sum(right) / len(right),
        tuning=sum(right[0::2]) / len(right[0::2]),
        held_out=sum(right[1::2]) / len(right[1::2]),
        simple_cheap=sum(simple) / len(simple),
        complex_strong=1 - sum(complex_) / len(complex_),
        cheap_share=sum(cheap) / len(cheap),
        cost_share=spent / sum(_cost(e, STRONG) for e in items),
        complex_sent_cheap=sum(complex_),
    )


RULES = {
    "token count (+ tools)": lambda threshold: replace(BASE, complex_above_tokens=threshold, complex_by_cues=False),
    "token count + cues (+ tools)": lambda threshold: replace(BASE, complex_above_tokens=threshold, complex_by_cues=True),
}


def sweep(items: list[Example]) -> dict[str, list[Score]]:
    return {rule: [score(rule, make(t), t, items) for t in THRESHOLDS] for rule, make in RULES.items()}


def chosen(scores: list[Score]) -> Score:
    """The threshold chosen on the tuning half (see the module's docstring)."""
    return max(scores, key=lambda s: (round(s.tuning, 6), -s.complex_sent_cheap, -s.threshold))


def overhead_us(spec: PolicySpec, items: list[Example], rounds: int = 20) -> tuple[float, float]:
    """(median, max) thread-CPU µs per decision over the set, the bodies built beforehand."""
    bodies = [e.body() for e in items]
    for body in bodies:
        adaptive.group_for(spec, body)
    per_round = []
    for _ in range(rounds):
        started = time.thread_time()
        for body in bodies:
            adaptive.group_for(spec, body)
        per_round.append((time.thread_time() - started) / len(bodies) * 1e6)
    worst = 0.0
    for body in bodies:  # the costliest single request (a long document), timed alone
        started = time.thread_time()
        for _ in range(50):
            adaptive.group_for(spec, body)
        worst = max(worst, (time.thread_time() - started) / 50 * 1e6)
    return statistics.median(per_round), worst


@dataclass
class Result:
    items: list[Example]
    sweeps: dict[str, list[Score]]
    picks: dict[str, Score]
    overhead: dict[str, tuple[float, float]]
    by_kind: list[tuple[str, str, int, float, float]]  # kind, label, count, token rule right, cues rule right


def run() -> Result:
    items = examples()
    sweeps = sweep(items)
    picks = {rule: chosen(scores) for rule, scores in sweeps.items()}
    overhead = {rule: overhead_us(RULES[rule](pick.threshold), items) for rule, pick in picks.items()}
    by_kind = []
    specs = [RULES[rule](pick.threshold) for rule, pick in picks.items()]
    for kind in dict.fromkeys(e.kind for e in items):
        group = [e for e in items if e.kind == kind]
        right = []
        for spec in specs:
            routed = [adaptive.group_for(spec, e.body()) for e in group]
            right.append(sum((r is not None and r[0] == "cheap") == (e.label == "simple") for e, r in zip(group, routed, strict=True)))
        by_kind.append((kind, group[0].label, len(group), right[0] / len(group), right[1] / len(group)))
    return Result(items, sweeps, picks, overhead, by_kind)


def pct(value: float) -> str:
    return f"{value * 100:.0f}%"


def report(result: Result) -> list[str]:
    items = result.items
    simple = sum(e.label == "simple" for e in items)
    lines = [
        HEADING,
        "",
        f"`routing.adaptive.group_for` on {len(items)} hand-labelled requests (bench/routing_prompts.py: {simple} simple, "
        f"{len(items) - simple} complex; short factual questions, chit-chat, lookups, long texts asked one fact vs reasoning, "
        "code, tool use, long documents to summarise or analyse). Right: simple to the cheap group, complex to the strong one. "
        "Each rule's `complex_above_tokens` is chosen on the even positions (highest accuracy, then fewest complex sent cheap, "
        "then the smaller threshold) and reported on the odd ones too. Cost: cheap at the bench stub's $0.15/$0.60 per million "
        "tokens, strong at $2.50/$10.00, answers of 150 (simple) or 800 (complex) tokens; against sending every request strong. "
        "One engineer wrote the set, its labels and the cue list: the held-out half checks the choice of threshold, not the "
        "cues, which real agents' traffic would test better. µs: thread CPU per `group_for`, the set's bodies built beforehand.",
        "",
        "| rule | threshold (chosen) | accuracy | tuning half | held-out half | simple sent cheap | complex sent strong "
        "| routed cheap | cost vs always-strong | µs a decision (median, worst request) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for rule, pick in result.picks.items():
        median, worst = result.overhead[rule]
        lines.append(
            f"| {rule} | {pick.threshold} | {pct(pick.accuracy)} | {pct(pick.tuning)} | {pct(pick.held_out)} | "
            f"{pct(pick.simple_cheap)} | {pct(pick.complex_strong)} | {pct(pick.cheap_share)} | {pct(pick.cost_share)} | "
            f"{median:.1f}, {worst:.1f} |"
        )
    lines += [
        "",
        "The sweep (accuracy on the whole set, and the share routed cheap):",
        "",
        "| complex_above_tokens | " + " | ".join(result.sweeps) + " |",
        "|---|" + "---|" * len(result.sweeps),
    ]
    for index, threshold in enumerate(THRESHOLDS):
        cells = [f"{pct(scores[index].accuracy)} ({pct(scores[index].cheap_share)} cheap)" for scores in result.sweeps.values()]
        lines.append(f"| {threshold} | " + " | ".join(cells) + " |")
    rules = list(result.picks)
    lines += [
        "",
        "Right, by kind of request, at each rule's chosen threshold:",
        "",
        f"| kind | label | requests | {rules[0]} | {rules[1]} |",
        "|---|---|---|---|---|",
        *[f"| {kind} | {label} | {count} | {pct(a)} | {pct(b)} |" for kind, label, count, a, b in result.by_kind],
        "",
    ]
    return lines


def main() -> None:
    print("\n".join(report(run())))


if __name__ == "__main__":
    main()
