"""Files, batches and their lines: a batch is its input file split into lines, each line a turn.

A line's state is the batch's durable progress: a line that ended keeps its result on its own row
and is only ever read again, so a batch picked up after a crash admits only the lines still pending
(and a running line's turn is the same turn, found by its Idempotency-Key).
"""

from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone

from budgets.models import ApiKey, Tenant


class FilePurpose(models.TextChoices):
    BATCH = "batch"
    BATCH_OUTPUT = "batch_output"


class File(models.Model):
    """An uploaded (or generated) file, kept in the database so every web and worker process sees it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    purpose = models.CharField(max_length=32, choices=FilePurpose.choices)
    filename = models.CharField(max_length=255)
    bytes = models.PositiveBigIntegerField()
    content = models.BinaryField()
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["tenant", "-created_at"], name="file_tenant_recent")]

    def __str__(self) -> str:
        return self.filename

    @property
    def api_id(self) -> str:
        return f"file-{self.id.hex}"


class BatchStatus(models.TextChoices):
    VALIDATING = "validating"
    FAILED = "failed"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


BATCH_ENDED = (BatchStatus.FAILED, BatchStatus.COMPLETED, BatchStatus.EXPIRED, BatchStatus.CANCELLED)


class Batch(models.Model):
    """A batch job: which file, which endpoint, how far it got (the counts move with its lines)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    endpoint = models.CharField(max_length=64)
    input_file = models.ForeignKey(File, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    input_file_ref = models.CharField(max_length=64, help_text="The input file's id as the client sent it (kept if the file is deleted).")
    completion_window = models.CharField(max_length=16, default="24h")
    metadata = models.JSONField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=BatchStatus.choices, default=BatchStatus.VALIDATING)
    errors = models.JSONField(null=True, blank=True, help_text="Why the whole batch failed validation, if it did.")
    total = models.PositiveIntegerField(default=0)
    completed = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    output_file = models.ForeignKey(File, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    error_file = models.ForeignKey(File, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now)
    in_progress_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField()
    finalizing_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    expired_at = models.DateTimeField(null=True, blank=True)
    cancelling_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "batches"
        indexes = [
            models.Index(fields=["tenant", "-created_at"], name="batch_tenant_recent"),
            models.Index(fields=["status", "updated_at"], name="batch_status_updated"),
        ]

    def __str__(self) -> str:
        return f"batch {self.id} ({self.status})"

    @property
    def api_id(self) -> str:
        return f"batch_{self.id.hex}"

    @property
    def is_finished(self) -> bool:
        return self.status in BATCH_ENDED


class LineState(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class BatchLine(models.Model):
    """One request of a batch: its custom_id and body, then its turn, then its result (checkpointed)."""

    id = models.BigAutoField(primary_key=True)
    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="lines")
    index = models.PositiveIntegerField(help_text="Its line number in the input file, from 0.")
    custom_id = models.CharField(max_length=512, blank=True)
    body = models.JSONField(null=True, blank=True)
    state = models.CharField(max_length=16, choices=LineState.choices, default=LineState.PENDING)
    turn = models.ForeignKey("agents.Turn", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    response = models.JSONField(null=True, blank=True, help_text="{status_code, request_id, body} once it ended with an answer.")
    error = models.JSONField(null=True, blank=True, help_text="{code, message, line} when it could not run.")

    class Meta:
        ordering = ["batch", "index"]
        constraints = [models.UniqueConstraint(fields=["batch", "index"], name="batch_line_index_unique")]
        indexes = [
            models.Index(fields=["batch", "state", "index"], name="batch_line_state"),
            models.Index(fields=["state"], condition=models.Q(state="running"), name="batch_line_running"),
        ]

    def __str__(self) -> str:
        return f"{self.custom_id or self.index} ({self.state})"

    @property
    def is_finished(self) -> bool:
        return self.state in (LineState.SUCCEEDED, LineState.FAILED)
