"""A batch admits at most SENTINEL_BATCH_CONCURRENCY lines at a time, deployment-wide, in file order,
on the batches queue; the rest wait as pending lines."""

import pytest

from agents.models import Turn
from batches import processing
from batches.models import Batch, BatchLine, File, LineState
from tests.batches.conftest import jsonl, line

pytestmark = pytest.mark.django_db


def make_batch(actor, count: int) -> Batch:
    content = jsonl(*[line(f"b{i}") for i in range(count)])
    file = File.objects.create(tenant=actor.tenant, purpose="batch", filename="in.jsonl", bytes=len(content), content=content)
    batch = processing.create(
        tenant=actor.tenant,
        api_key=actor.api_key,
        input_file=file,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata=None,
        wake=lambda b: None,
    )
    assert processing.validate(batch.id)
    return batch


def test_it_admits_no_more_lines_than_the_bound(alice, bob, settings):
    settings.SENTINEL = {**settings.SENTINEL, "BATCH_CONCURRENCY": 3}
    sent = []
    first, second = make_batch(alice, 5), make_batch(bob, 5)
    processing.advance(first.id, enqueue=sent.append)
    processing.advance(second.id, enqueue=sent.append)
    assert BatchLine.objects.filter(state=LineState.RUNNING).count() == 3
    assert list(BatchLine.objects.filter(batch=first, state=LineState.RUNNING).values_list("index", flat=True)) == [0, 1, 2]
    assert not BatchLine.objects.filter(batch=second, state=LineState.RUNNING).exists(), "the bound holds across batches"


def test_advancing_again_admits_nothing_twice(alice, settings):
    settings.SENTINEL = {**settings.SENTINEL, "BATCH_CONCURRENCY": 2}
    batch = make_batch(alice, 4)
    processing.advance(batch.id, enqueue=lambda turn: None)
    turns = set(BatchLine.objects.filter(batch=batch, state=LineState.RUNNING).values_list("turn_id", flat=True))
    processing.advance(batch.id, enqueue=lambda turn: None)
    assert set(BatchLine.objects.filter(batch=batch, state=LineState.RUNNING).values_list("turn_id", flat=True)) == turns
    assert Batch.objects.get(id=batch.id).status == "in_progress"


def test_each_line_is_a_budgeted_turn_on_the_batches_queue(alice, settings):
    from batches.tasks import enqueue_line

    settings.SENTINEL = {**settings.SENTINEL, "BATCH_CONCURRENCY": 1}
    batch = make_batch(alice, 1)
    processing.advance(batch.id, enqueue=lambda turn: None)
    turn = BatchLine.objects.get(batch=batch).turn
    assert turn.idempotency_key == f"batch:{batch.id}:0"
    from budgets.models import Reservation

    assert Reservation.objects.filter(turn_id=turn.id).exists(), "admission reserved its worst case"
    assert enqueue_line.__module__ == "batches.tasks"


def test_a_line_over_budget_fails_with_its_refusal_and_the_batch_goes_on(alice):
    from decimal import Decimal

    from budgets.models import Budget, Price

    Price.objects.create(model="stub-model", input_per_mtok=Decimal(1000), output_per_mtok=Decimal(1000))
    Budget.objects.filter(tenant=alice.tenant).update(limit=Decimal("0.000001"))
    batch = make_batch(alice, 2)
    processing.advance(batch.id, enqueue=lambda turn: None)
    batch.refresh_from_db()
    assert batch.status == "completed" and (batch.completed, batch.failed) == (0, 2)
    line = BatchLine.objects.filter(batch=batch).first()
    assert line.response["status_code"] == 503 and line.response["body"]["error"]["code"] == "budget_exceeded"
    assert not Turn.objects.exists(), "nothing was admitted"


def test_a_batch_past_its_window_expires_with_its_unrun_lines_in_the_error_file(alice):
    import json
    from datetime import timedelta

    from django.utils import timezone

    batch = make_batch(alice, 3)
    Batch.objects.filter(id=batch.id).update(expires_at=timezone.now() - timedelta(seconds=1))
    processing.advance(batch.id, enqueue=lambda turn: None)
    batch.refresh_from_db()
    assert batch.status == "expired" and batch.expired_at is not None and (batch.completed, batch.failed) == (0, 3)
    records = [json.loads(text) for text in bytes(batch.error_file.content).decode().splitlines()]
    assert [(r["custom_id"], r["error"]["code"]) for r in records] == [(f"b{i}", "batch_expired") for i in range(3)]
    assert batch.output_file is None and not Turn.objects.exists()


def test_a_batch_cancelled_while_validating_never_runs(alice):
    content = jsonl(line("only"))
    file = File.objects.create(tenant=alice.tenant, purpose="batch", filename="in.jsonl", bytes=len(content), content=content)
    woken = []
    batch = processing.create(
        tenant=alice.tenant,
        api_key=alice.api_key,
        input_file=file,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata=None,
        wake=woken.append,
    )
    assert processing.cancel(batch, wake=woken.append).status == "cancelling"
    assert processing.validate(batch.id) is False
    batch.refresh_from_db()
    assert batch.status == "cancelled" and not BatchLine.objects.exists()
