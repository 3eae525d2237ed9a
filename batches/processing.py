"""A batch's life, moved on only from its rows, whoever calls, however often (the runs dispatcher's shape).

`validate` splits the input file into lines in one transaction (a bad line is a failed line, never a
failed batch). `advance` takes the batch's row lock, then: settles its running lines whose turns
ended, and admits pending lines through agents.admission (each a budgeted, audited turn with the
Idempotency-Key `batch:<batch>:<line>`, enqueued on the low-priority `batches` queue once the
transaction commits) while fewer than SENTINEL_BATCH_CONCURRENCY batch lines run in the whole
deployment; when no line is left, the output and error files are written and the batch ends. A
line's result is checkpointed on its row when its turn ends, so a batch picked up after a crash
redoes nothing: pending lines are admitted, running lines wait for their turns (which the
Supervisor sees to), ended lines are only read.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from agents import activity, admission
from agents.models import Turn, TurnStatus
from batches import lines, metrics
from batches.endpoints import ENDPOINTS
from batches.models import Batch, BatchLine, BatchStatus, File, FilePurpose, LineState
from batches.signals import batch_ended
from budgets import audit, spend
from budgets.models import ApiKey, Tenant
from memory import context as memory_context
from sentinel_site.errors import turn_error

log = logging.getLogger(__name__)

COMPLETION_WINDOWS = {"24h": timedelta(hours=24)}
REFUSALS = (
    admission.AgentNotFound,
    admission.ConversationNotFound,
    admission.ConversationAgentMismatch,
    admission.IdempotencyKeyReused,
    memory_context.ContextLengthExceeded,
    spend.UnpricedModel,
    spend.BudgetExceeded,
)
ADMISSION_LOCK = 0x5E17_BA7C  # one advisory lock: batches admit one at a time, so the global bound holds
Enqueue = Callable[[Turn], None]


def create(
    *,
    tenant: Tenant,
    api_key: ApiKey | None,
    input_file: File,
    endpoint: str,
    completion_window: str,
    metadata: dict | None,
    wake: Callable[[Batch], None],
) -> Batch:
    """The batch, validating; `wake` (its validation task) once it commits."""
    now = timezone.now()
    with transaction.atomic():
        batch = Batch.objects.create(
            tenant=tenant,
            api_key=api_key,
            endpoint=endpoint,
            input_file=input_file,
            input_file_ref=input_file.api_id,
            completion_window=completion_window,
            metadata=metadata,
            created_at=now,
            updated_at=now,
            expires_at=now + COMPLETION_WINDOWS[completion_window],
        )
        audit.record(
            "batch.created",
            actor=audit.actor_for_key(api_key),
            tenant_id=tenant.id,
            target=batch.api_id,
            data={"endpoint": endpoint, "input_file": input_file.api_id},
        )
        transaction.on_commit(lambda: wake(batch))
    return batch


def validate(batch_id: Any) -> bool:
    """Split the input file into lines, all in one transaction. True if the batch is to be advanced."""
    with transaction.atomic():
        batch = Batch.objects.select_for_update().filter(id=batch_id).first()
        if batch is None or batch.status not in (BatchStatus.VALIDATING, BatchStatus.CANCELLING) or batch.in_progress_at:
            return batch is not None and not batch.is_finished
        now = timezone.now()
        if batch.status == BatchStatus.CANCELLING:
            _end(batch, BatchStatus.CANCELLED, now)
            return False
        content = bytes(batch.input_file.content) if batch.input_file else None
        specs = lines.read(content, batch.endpoint, ENDPOINTS[batch.endpoint].check) if content is not None else []
        if not specs:
            message = "The input file was deleted." if content is None else "The input file has no requests."
            batch.errors = {
                "object": "list",
                "data": [
                    {
                        "code": "empty_file" if content is not None else "file_not_found",
                        "message": message,
                        "param": "input_file_id",
                        "line": None,
                    }
                ],
            }
            _end(batch, BatchStatus.FAILED, now)
            return False
        BatchLine.objects.bulk_create(
            (
                BatchLine(
                    batch=batch,
                    index=spec.index,
                    custom_id=spec.custom_id,
                    body=spec.body,
                    state=LineState.FAILED if spec.error else LineState.PENDING,
                    error=spec.error,
                )
                for spec in specs
            ),
            batch_size=2000,
        )
        fields = {
            "status": BatchStatus.IN_PROGRESS,
            "in_progress_at": now,
            "updated_at": now,
            "total": len(specs),
            "failed": sum(1 for spec in specs if spec.error),
        }
        Batch.objects.filter(id=batch.id).update(**fields)
    return True


def advance(batch_id: Any, enqueue: Enqueue) -> None:
    """Settle the lines whose turns ended, admit pending ones within the bound, end the batch when
    nothing is left. Safe to call at any time, from anywhere, twice."""
    with transaction.atomic():
        batch = Batch.objects.select_related("tenant", "api_key").select_for_update(of=("self",)).filter(id=batch_id).first()
        if batch is None or batch.status not in (BatchStatus.IN_PROGRESS, BatchStatus.CANCELLING):
            return
        now = timezone.now()
        running = _settle(batch)
        if batch.status == BatchStatus.IN_PROGRESS and now >= batch.expires_at:
            batch.status = BatchStatus.EXPIRED  # admits nothing more; ends once its running lines did
        if batch.status == BatchStatus.IN_PROGRESS:
            running += _admit_pending(batch, running, enqueue)
        if running == 0 and not (batch.status == BatchStatus.IN_PROGRESS and _has_pending(batch)):
            ending = {BatchStatus.IN_PROGRESS: BatchStatus.COMPLETED, BatchStatus.CANCELLING: BatchStatus.CANCELLED}
            _finalize(batch, ending.get(batch.status, batch.status), now)
            return
        Batch.objects.filter(id=batch.id).update(completed=batch.completed, failed=batch.failed, updated_at=now)


def cancel(batch: Batch, wake: Callable[[Batch], None]) -> Batch:
    """cancelling: no line is admitted any more; it ends as cancelled once its running lines ended."""
    with transaction.atomic():
        locked = Batch.objects.select_for_update().get(id=batch.id)
        if locked.status in (BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS):
            now = timezone.now()
            Batch.objects.filter(id=batch.id).update(status=BatchStatus.CANCELLING, cancelling_at=now, updated_at=now)
            audit.record("batch.cancelled", actor=audit.actor_for_key(batch.api_key), tenant_id=batch.tenant_id, target=batch.api_id)
            transaction.on_commit(lambda: wake(locked))
    return Batch.objects.get(id=batch.id)


# --- settling ----------------------------------------------------------------------------------------
def _settle(batch: Batch) -> int:
    """The running lines whose turns ended take their results; returns how many still run."""
    still = 0
    endpoint = ENDPOINTS[batch.endpoint]
    for line in BatchLine.objects.filter(batch=batch, state=LineState.RUNNING).select_related("turn__agent", "turn__output"):
        turn = line.turn
        if turn is None:  # its turn was deleted (its tenant's history purged): nothing will come
            _fail(batch, line, {"code": "turn_lost", "message": "The line's turn no longer exists."})
        elif not turn.is_finished:
            still += 1
        elif turn.status == TurnStatus.SUCCEEDED:
            line.state = LineState.SUCCEEDED
            line.response = {"status_code": 200, "request_id": str(turn.id), "body": endpoint.answer(turn)}
            line.save(update_fields=["state", "response"])
            batch.completed += 1
        else:
            error = turn.error or {"status": 500, "code": f"turn_{turn.status}", "message": f"The turn {turn.status}."}
            _fail(batch, line, error, request_id=str(turn.id))
    return still


def _fail(batch: Batch, line: BatchLine, error: dict, *, request_id: str | None = None) -> None:
    """A line that was sent and answered with an error: its response carries the error as a client saw it."""
    body = {
        "error": {"message": error.get("message", ""), "type": error.get("type", "server_error"), "param": None, "code": error.get("code")}
    }
    line.state = LineState.FAILED
    line.response = {"status_code": error.get("status", 500), "request_id": request_id, "body": body}
    line.save(update_fields=["state", "response"])
    batch.failed += 1


# --- admitting ---------------------------------------------------------------------------------------
def _admit_pending(batch: Batch, running: int, enqueue: Enqueue) -> int:
    """Admit pending lines in file order while the deployment runs fewer batch lines than its bound."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ADMISSION_LOCK])
    room = bound() - BatchLine.objects.filter(state=LineState.RUNNING).count()
    if room <= 0:
        return 0
    admitted = 0
    endpoint = ENDPOINTS[batch.endpoint]
    for line in BatchLine.objects.filter(batch=batch, state=LineState.PENDING).order_by("index")[:room]:
        try:
            turn = admission.admit(
                tenant=batch.tenant,
                api_key=batch.api_key,
                data=endpoint.request(line.body or {}),
                idempotency_key=idempotency_key(batch, line),
                enqueue=enqueue,
            ).turn
        except REFUSALS as refusal:
            _fail(batch, line, turn_error(refusal))
            continue
        BatchLine.objects.filter(id=line.id).update(state=LineState.RUNNING, turn=turn)
        admitted += 1
    return admitted


def bound() -> int:
    """How many batch lines may run at once in the deployment: fewer while real-time turns run
    (agents/activity.py), so that a batch never takes the machine from them. A line that ends wakes
    its batch, which asks again, so a batch held to the smaller bound grows back once they stop."""
    conf = settings.SENTINEL
    return min(conf["BATCH_CONCURRENCY"], conf["BATCH_CONCURRENCY_BUSY"]) if activity.realtime_busy() else conf["BATCH_CONCURRENCY"]


def idempotency_key(batch: Batch, line: BatchLine) -> str:
    """The same line admits the same turn, however many times it is tried."""
    return f"batch:{batch.id}:{line.index}"


def batch_of(idempotency_key: str | None) -> str | None:
    """The batch id in a turn's Idempotency-Key, if the turn is a batch line's."""
    if not (idempotency_key or "").startswith("batch:"):
        return None
    return idempotency_key.split(":")[1]  # type: ignore[union-attr]


def _has_pending(batch: Batch) -> bool:
    return BatchLine.objects.filter(batch=batch, state=LineState.PENDING).exists()


# --- the end -----------------------------------------------------------------------------------------
def _finalize(batch: Batch, status: str, now) -> None:
    """Lines that never ran fail with the reason; then the output and error files, one line per
    custom_id between them, in input order."""
    reason = {
        BatchStatus.CANCELLED: ("batch_cancelled", "The batch was cancelled before this request ran."),
        BatchStatus.EXPIRED: ("batch_expired", "The batch expired before this request ran."),
    }.get(status)
    if reason is not None:
        unrun = BatchLine.objects.filter(batch=batch, state=LineState.PENDING)
        batch.failed += unrun.update(state=LineState.FAILED, error={"code": reason[0], "message": reason[1], "param": None, "line": None})
    Batch.objects.filter(id=batch.id).update(status=BatchStatus.FINALIZING, finalizing_at=now)
    output, errors = [], []
    for line in BatchLine.objects.filter(batch=batch).order_by("index").iterator(chunk_size=2000):
        record = {
            "id": f"batch_req_{batch.id.hex[:12]}{line.index:08d}",
            "custom_id": line.custom_id,
            "response": line.response,
            "error": line.error,
        }
        (output if line.state == LineState.SUCCEEDED else errors).append(json.dumps(record, separators=(",", ":")))
    batch.output_file = _write(batch, "output", output)
    batch.error_file = _write(batch, "error", errors)
    _end(batch, status, now)


def _write(batch: Batch, kind: str, records: list[str]) -> File | None:
    if not records:
        return None
    content = ("\n".join(records) + "\n").encode()
    return File.objects.create(
        tenant_id=batch.tenant_id,
        purpose=FilePurpose.BATCH_OUTPUT,
        filename=f"{batch.api_id}_{kind}.jsonl",
        bytes=len(content),
        content=content,
    )


def _end(batch: Batch, status: str, now) -> None:
    stamp = {
        BatchStatus.COMPLETED: "completed_at",
        BatchStatus.FAILED: "failed_at",
        BatchStatus.EXPIRED: "expired_at",
        BatchStatus.CANCELLED: "cancelled_at",
    }[status]
    fields = {
        "status": status,
        stamp: now,
        "updated_at": now,
        "completed": batch.completed,
        "failed": batch.failed,
        "output_file": batch.output_file,
        "error_file": batch.error_file,
        "errors": batch.errors,
    }
    Batch.objects.filter(id=batch.id).update(**fields)
    batch.status = status
    completed, failed = batch.completed, batch.failed

    def announce() -> None:
        metrics.observe_end(status, completed, failed)
        batch_ended.send_robust(Batch, batch_id=batch.id, tenant_id=batch.tenant_id, status=status)

    transaction.on_commit(announce)
    log.info("batch ended", extra={"batch": str(batch.id), "status": status})
