"""python manage.py replay --agent ID [--from T] [--to T]: replay every finished turn of an agent in a
range against its recorded provider I/O (agents/replay.py) and print a summary: how many were
replayed, how many identical, the divergences by field. Exits non-zero if any turn diverged (with
--strict, also if any could not be reproduced). No model is called and nothing is spent.
"""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime
from functools import partial

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from agents import replay
from agents.models import UNFINISHED, Agent, Turn
from memory import embeddings


def _instant(value: str) -> datetime:
    parsed = parse_datetime(value)
    if parsed is None:
        raise CommandError(f"not an ISO 8601 timestamp: {value!r} (e.g. 2026-12-01T21:00:00Z)")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class Command(BaseCommand):
    help = "Replay an agent's turns in a time range against their recorded provider I/O; non-zero exit on divergence."

    def add_arguments(self, parser):
        parser.add_argument("--agent", required=True, help="the agent's id")
        parser.add_argument("--from", dest="start", type=_instant, help="turns created from this instant (ISO 8601; UTC if no offset)")
        parser.add_argument("--to", dest="end", type=_instant, help="until this instant, exclusive (default: now)")
        parser.add_argument("--strict", action="store_true", help="also exit non-zero if a turn could not be reproduced")

    def handle(self, *args, **options):
        try:
            agent = Agent.objects.get(id=uuid.UUID(options["agent"]))
        except (ValueError, Agent.DoesNotExist):
            raise CommandError(f"no agent with id {options['agent']}") from None
        turns = Turn.objects.filter(agent=agent, created_at__lt=options["end"] or timezone.now()).exclude(status__in=UNFINISHED)
        if options["start"]:
            turns = turns.filter(created_at__gte=options["start"])
        counts: Counter[str] = Counter()
        by_field: Counter[str] = Counter()
        verbose = options["verbosity"] > 1
        for turn in turns.select_related("agent", "conversation").order_by("created_at").iterator(chunk_size=200):
            turn.conversation.agent = turn.agent
            try:
                report = replay.replay(turn, embed=partial(embeddings.embed_query, tenant=turn.tenant_id))
            except replay.NotReplayable:
                counts["skipped"] += 1
                continue
            counts["replayed"] += 1
            counts["identical"] += report.identical
            counts["diverged"] += bool(report.divergences)
            counts["unreproducible"] += bool(report.unreproducible)
            for kind in sorted({divergence.kind for divergence in report.divergences}):
                by_field[kind] += 1
            if verbose or report.divergences:
                self._show(turn, report, verbose)
        self.stdout.write(
            f"{agent.name} ({agent.id}): {counts['replayed']} replayed, {counts['identical']} identical, "
            f"{counts['diverged']} diverged, {counts['unreproducible']} unreproducible, "
            f"{counts['skipped']} skipped (no recorded call)"
        )
        if by_field:
            self.stdout.write("divergences by field (turns):")
            for kind, count in by_field.most_common():
                self.stdout.write(f"  {kind}: {count}")
        if counts["diverged"] or (options["strict"] and counts["unreproducible"]):
            raise CommandError(f"{counts['diverged']} turn(s) diverged, {counts['unreproducible']} could not be reproduced")

    def _show(self, turn: Turn, report: replay.Report, verbose: bool) -> None:
        self.stdout.write(f"turn {turn.id} ({turn.created_at.isoformat()}): {'identical' if report.identical else 'DIVERGED'}")
        for divergence in report.divergences[: None if verbose else 10]:
            data = divergence.as_dict()
            recorded, replayed = data.get("recorded", "<absent>"), data.get("replayed", "<absent>")
            self.stdout.write(f"  {data['field']}: recorded {recorded!r}, replayed {replayed!r}")
        for item in report.unreproducible:
            self.stdout.write(f"  cannot reproduce {item['what']}: {item['why']}")
        if verbose:
            for note in report.notes:
                self.stdout.write(f"  note: {note}")
