"""python manage.py verify_audit [--checkpoint FILE ...]: exit 0 if the audit chain is intact, else name the first bad entry.

With --checkpoint, each signed checkpoint in FILE (the checkpoint file, or a shipped log that carries
the checkpoint lines) is verified with the audit key, and the chain must still contain every
checkpointed (seq, hash): truncation, a wiped log and a rewrite by a key holder are caught too. A
checkpoint whose signature does not verify is reported and not trusted.
"""

from django.core.management.base import BaseCommand, CommandError

from budgets import audit
from budgets.models import AuditEntry


class Command(BaseCommand):
    help = "Verify the keyed hash chain of the audit log (and its signed checkpoints); exits non-zero naming the first bad sequence number."

    def add_arguments(self, parser):
        parser.add_argument(
            "--checkpoint",
            action="append",
            default=[],
            metavar="FILE",
            help="a file of signed checkpoint lines (SENTINEL_AUDIT_CHECKPOINT_FILE, or a log holding them); repeatable",
        )

    def handle(self, *args, **options):
        anchors = audit.Anchors()
        for path in options["checkpoint"]:
            try:
                with open(path, encoding="utf-8", errors="replace") as lines:
                    found = audit.read_checkpoints(lines, source=path)
            except OSError as exc:
                raise CommandError(f"cannot read the checkpoint file {path}: {exc.strerror}") from None
            for seq, point in found.by_seq.items():
                known = anchors.by_seq.setdefault(seq, point)
                if known.hash != point.hash:
                    found.problems.append(f"{path}: two signed checkpoints disagree on sequence number {seq}")
            anchors.problems += found.problems
            anchors.ignored += found.ignored
        if options["checkpoint"] and not anchors.by_seq and not anchors.problems:
            raise CommandError(f"no checkpoint in {', '.join(options['checkpoint'])}: nothing to check the chain against")
        problems = list(anchors.problems)
        broken = audit.check(anchors.by_seq)
        if broken is not None:
            problems.insert(0, f"audit log broken at {broken}")
        if problems:
            shown = problems[:10] + ([f"and {len(problems) - 10} more problems"] if len(problems) > 10 else [])
            raise CommandError("; ".join(shown))
        summary = f"audit log intact: {AuditEntry.objects.count()} entries"
        if anchors.by_seq:
            newest = anchors.by_seq[max(anchors.by_seq)]
            summary += f"; {len(anchors.by_seq)} signed checkpoints match (newest: sequence number {newest.seq} of {newest.at})"
        self.stdout.write(summary)
