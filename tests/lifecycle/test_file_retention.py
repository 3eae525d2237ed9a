"""Files and batch outputs retention: a tenant's old uploads, batch output and error files and the
lines of its ended batches go by its policy, listed by `purge --dry-run` first; what an unfinished
batch still reads or writes stays however old."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from batches.models import Batch, BatchLine, BatchStatus, File, FilePurpose
from lifecycle.models import DataKind, RetentionPolicy
from tests.lifecycle.test_purge import OLD, dry_run, purge

pytestmark = pytest.mark.django_db


@pytest.fixture
def thirty_days(settings):
    settings.SENTINEL = {**settings.SENTINEL, "RETAIN_FILES_DAYS": 30}


def a_file(actor, purpose: str, *, when) -> File:
    file = File.objects.create(tenant=actor.tenant, purpose=purpose, filename=f"{purpose}.jsonl", bytes=3, content=b"{}\n")
    File.objects.filter(id=file.id).update(created_at=when)
    return file


def a_batch(actor, status: str, *, when, lines: int = 2) -> Batch:
    """A batch made `when` with its input, and (if it ended) its output and error files and end time."""
    ended = status in (BatchStatus.COMPLETED, BatchStatus.FAILED, BatchStatus.EXPIRED, BatchStatus.CANCELLED)
    batch = Batch.objects.create(
        tenant=actor.tenant,
        endpoint="/v1/chat/completions",
        input_file=a_file(actor, FilePurpose.BATCH, when=when),
        input_file_ref="file-x",
        status=status,
        expires_at=when + timedelta(hours=24),
        output_file=a_file(actor, FilePurpose.BATCH_OUTPUT, when=when) if ended else None,
        error_file=a_file(actor, FilePurpose.BATCH_OUTPUT, when=when) if ended else None,
        completed_at=when if status == BatchStatus.COMPLETED else None,
        cancelled_at=when if status == BatchStatus.CANCELLED else None,
    )
    BatchLine.objects.bulk_create([BatchLine(batch=batch, index=i, custom_id=f"r{i}", body={}) for i in range(lines)])
    return batch


def test_old_files_outputs_and_ended_batches_lines_go_as_the_dry_run_listed(alice, bob, thirty_days):
    done = a_batch(alice, BatchStatus.COMPLETED, when=OLD, lines=3)
    a_file(alice, FilePurpose.BATCH, when=OLD)  # an upload no batch used
    recent = a_batch(alice, BatchStatus.COMPLETED, when=timezone.now())
    tenant = f"tenant {alice.tenant.id}"
    listed = dry_run()
    assert {key: rows for key, rows in listed.items() if key.endswith(tenant)} == {
        f"batch lines {tenant}": 3,
        f"batch output files {tenant}": 2,
        f"files {tenant}": 2,
    }
    assert File.objects.filter(tenant=alice.tenant).count() == 7, "a dry run deletes nothing"
    assert purge() == listed
    done.refresh_from_db()
    assert done.status == BatchStatus.COMPLETED and done.completed == 0 and done.input_file_ref == "file-x", "the batch row stays"
    assert (done.input_file, done.output_file, done.error_file) == (None, None, None)
    assert not BatchLine.objects.filter(batch=done).exists()
    assert File.objects.filter(tenant=alice.tenant).count() == 3 and BatchLine.objects.filter(batch=recent).count() == 2
    assert dry_run() == {}


def test_an_unfinished_batchs_files_and_lines_stay_however_old(alice, thirty_days):
    running = a_batch(alice, BatchStatus.IN_PROGRESS, when=OLD)
    File.objects.filter(id=running.input_file_id).update(created_at=OLD - timedelta(days=300))
    Batch.objects.filter(id=a_batch(alice, BatchStatus.IN_PROGRESS, when=OLD).id).update(input_file=None)  # its input already gone
    other = a_file(alice, FilePurpose.BATCH, when=OLD)
    purge()
    running.refresh_from_db()
    assert running.input_file is not None and BatchLine.objects.filter(batch=running).count() == 2
    assert not File.objects.filter(id=other.id).exists(), "a batch without its input holds back no other file"


def test_a_tenants_own_files_policy_replaces_the_default(alice, bob, thirty_days):
    RetentionPolicy.objects.create(tenant=bob.tenant, kind=DataKind.FILES, days=0)  # forever
    a_batch(alice, BatchStatus.CANCELLED, when=OLD)
    kept = a_batch(bob, BatchStatus.CANCELLED, when=OLD)
    purge()
    assert not File.objects.filter(tenant=alice.tenant).exists()
    assert File.objects.filter(tenant=bob.tenant).count() == 3 and BatchLine.objects.filter(batch=kept).count() == 2


def test_files_are_kept_forever_by_default(alice):
    a_batch(alice, BatchStatus.COMPLETED, when=OLD)
    assert not [key for key in dry_run() if "file" in key or "batch" in key]
