"""Webhook endpoints, and the outbox of deliveries to them with every attempt's outcome.

A delivery is written (in the transaction of what it tells of, or right after it) before anything
is sent, so a crash loses no event: a worker claims a due delivery by a conditional update, sends
it, and records the attempt; a failed attempt is due again after a backoff, until its attempts run out.
"""

from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone

from budgets.models import Tenant
from sentinel_site import egress

EVENT_TYPES = (
    "response.completed",
    "response.failed",
    "response.cancelled",
    "batch.completed",
    "batch.failed",
    "batch.expired",
    "batch.cancelled",
    "turn.completed",
    "turn.failed",
    "turn.cancelled",
    "run.completed",
    "run.failed",
    "run.cancelled",
)


class WebhookEndpoint(models.Model):
    """Where a tenant wants events sent, and the secret they are signed with (write-only after creation)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=200, blank=True)
    url = models.URLField(max_length=2000, help_text="Checked against SENTINEL_PROVIDER_ALLOWED_HOSTS at save and at every connection.")
    event_types = models.JSONField(default=list, help_text="Event types delivered here.")
    secret = models.CharField(max_length=100, editable=False, help_text="whsec_<base64>; shown once, never again.")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["tenant", "-created_at"], name="webhook_endpoint_tenant_recent")]

    def __str__(self) -> str:
        return self.name or self.url

    @property
    def api_id(self) -> str:
        return f"we_{self.id.hex}"

    @property
    def secret_hint(self) -> str:
        return f"whsec_...{self.secret[-4:]}"

    def clean(self) -> None:
        super().clean()
        from django.core.exceptions import ValidationError

        try:
            egress.check_url(self.url)
        except egress.EgressDenied as denied:
            raise ValidationError({"url": f"This URL is not allowed: {denied}."}) from None


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"
    SENDING = "sending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Delivery(models.Model):
    """One event for one endpoint: its body (signed afresh at each attempt) and where it stands."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    event_id = models.CharField(max_length=64, help_text="The `webhook-id` header: the same on every attempt.")
    event_type = models.CharField(max_length=64)
    payload = models.JSONField()
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now, help_text="Due then (pending), or its sender's lease ends then.")
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "deliveries"
        indexes = [
            models.Index(fields=["next_attempt_at"], condition=models.Q(status__in=["pending", "sending"]), name="delivery_due"),
            models.Index(fields=["endpoint", "-created_at"], name="delivery_endpoint_recent"),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.event_id} ({self.status})"


class DeliveryAttempt(models.Model):
    """One try at sending a delivery: the status the receiver answered, or why nothing came back."""

    id = models.BigAutoField(primary_key=True)
    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveIntegerField()
    status_code = models.PositiveIntegerField(null=True, blank=True)
    error = models.CharField(max_length=300, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["delivery", "number"]

    def __str__(self) -> str:
        return f"attempt {self.number}: {self.status_code or self.error}"
