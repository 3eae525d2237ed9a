"""Which files and batch outputs a retention policy lets go (batches app's File, Batch, BatchLine).

A file is the tenant's upload (a batch's input) or a batch's generated output or error file; all are
rows of `File` with their content inside. A batch that has not ended still needs its input (its lines
are read from it) and is about to write its outputs, so no file an unfinished batch refers to ever
goes. Of a batch that ended before the cutoff, its lines go too (they hold every response body a
second time, the output file's source); the Batch row stays, with its counts and timestamps, as a
turn stays when its events go. The batch API then shows `output_file_id` null, as OpenAI's does once
a file has expired.
"""

from __future__ import annotations

from datetime import datetime

from django.db.models import Q, QuerySet

from batches.models import BATCH_ENDED, Batch, BatchLine, File, FilePurpose


def _in_use(tenant: str) -> Q:
    """Files an unfinished batch of the tenant refers to (input, output or error)."""
    unfinished = Batch.objects.filter(tenant_id=tenant).exclude(status__in=BATCH_ENDED)
    # no NULLs in the lists: `NOT (id IN (..., NULL))` is never true, so one would keep every file
    return (
        Q(id__in=unfinished.filter(input_file__isnull=False).values("input_file_id"))
        | Q(id__in=unfinished.filter(output_file__isnull=False).values("output_file_id"))
        | Q(id__in=unfinished.filter(error_file__isnull=False).values("error_file_id"))
    )


def files(tenant: str, since: datetime) -> QuerySet:
    """The tenant's files (uploads and outputs) made before `since` that no unfinished batch uses."""
    return File.objects.filter(tenant_id=tenant, created_at__lt=since).exclude(_in_use(tenant))


def batch_lines(tenant: str, since: datetime) -> QuerySet:
    """The lines of the tenant's batches that ended before `since` (an ended batch's timestamps)."""
    ended = Batch.objects.filter(tenant_id=tenant, status__in=BATCH_ENDED).filter(
        Q(completed_at__lt=since) | Q(failed_at__lt=since) | Q(expired_at__lt=since) | Q(cancelled_at__lt=since)
    )
    return BatchLine.objects.filter(batch__in=ended)


def selections(tenant: str, since: datetime) -> list[tuple[str, QuerySet]]:
    """In the order a purge deletes them: lines, then outputs, then uploads (all plain rows)."""
    old = files(tenant, since)
    return [
        ("batch lines", batch_lines(tenant, since)),
        ("batch output files", old.filter(purpose=FilePurpose.BATCH_OUTPUT)),
        ("files", old.exclude(purpose=FilePurpose.BATCH_OUTPUT)),
    ]
