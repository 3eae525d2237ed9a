"""A finished run's answer, from its steps' checkpointed outputs: what each pattern returns."""

from __future__ import annotations

from collections import Counter
from typing import Any

from runs.models import Pattern, Run, Step, StepKind, StepState


def answers(steps: list[Step]) -> list[dict[str, Any]]:
    return [
        {"step": s.key, "agent": s.agent.name if s.agent else None, "output": s.output}
        for s in steps
        if s.state == StepState.SUCCEEDED and s.kind == StepKind.AGENT
    ]


def labelled(entries: list[dict[str, Any]]) -> str:
    return "\n\n".join(f"[{entry['step']}] {entry['output']}" for entry in entries)


def first_answer(steps: list[Step]) -> Step | None:
    done = [s for s in steps if s.state == StepState.SUCCEEDED and s.finished_at is not None]
    return min(done, key=lambda s: (s.finished_at, s.position)) if done else None


def vote(entries: list[dict[str, Any]]) -> tuple[str, dict[str, int]]:
    """The most common answer (compared trimmed and case-folded; a tie goes to the earliest step),
    as the first agent that gave it wrote it, and the count of each."""
    counts: Counter[str] = Counter()
    spelled: dict[str, str] = {}
    for entry in entries:
        normal = " ".join(entry["output"].split()).casefold()
        counts[normal] += 1
        spelled.setdefault(normal, entry["output"])
    best = max(counts, key=lambda normal: (counts[normal], -list(spelled).index(normal)))
    return spelled[best], {spelled[normal]: count for normal, count in counts.items()}


def result(run: Run, steps: list[Step]) -> tuple[str, dict[str, Any]]:
    """(output text, structured result) of a run whose steps allow it to succeed."""
    given = answers(steps)
    if run.pattern == Pattern.PARALLEL:
        aggregate = run.aggregate or "concat"
        if isinstance(aggregate, dict):
            final = next(s for s in steps if s.depends_on and s.kind == StepKind.AGENT)
            return final.output, {"aggregate": aggregate, "answers": [a for a in given if a["step"] != final.key], "by": final.key}
        if aggregate == "first":
            first = first_answer(steps)
            assert first is not None
            return first.output, {"aggregate": "first", "step": first.key, "answers": given}
        if aggregate == "vote":
            winner, counts = vote(given)
            return winner, {"aggregate": "vote", "votes": counts, "answers": given}
        return labelled(given), {"aggregate": "concat", "answers": given}
    if run.pattern == Pattern.BROADCAST:
        missing = [
            {"step": s.key, "agent": s.agent.name if s.agent else None, "state": s.state, "error": s.error}
            for s in steps
            if s.state != StepState.SUCCEEDED
        ]
        return labelled(given), {"responses": given, "missing": missing}
    if run.pattern == Pattern.ROUTE:
        route = next(s for s in steps if s.kind == StepKind.ROUTE)
        answer = next(s for s in steps if s.key == "answer")
        return answer.output, {**(route.result or {}), "answer": answer.output}
    # pipeline, workflow: what the steps nobody waits for gave
    waited_for = {dependency for s in steps for dependency in s.depends_on}
    sinks = [s for s in steps if s.key not in waited_for and s.state == StepState.SUCCEEDED]
    outputs = {s.key: s.output for s in sinks}
    text = sinks[0].output if len(sinks) == 1 else "\n\n".join(f"[{s.key}] {s.output}" for s in sinks)
    return text, {"outputs": outputs}
