"""Retention policies: how long each kind of data is kept, per tenant (the deployment's defaults
are settings: SENTINEL_RETAIN_<KIND>_DAYS)."""

from __future__ import annotations

from django.db import models

from budgets.models import Tenant


class DataKind(models.TextChoices):
    """What a retention policy applies to (lifecycle.retention says which rows each kind is)."""

    MESSAGES = "messages", "messages and summaries"
    TURN_EVENTS = "turn_events", "turn events (the replay log)"
    SPEND = "spend", "spend ledger, reservations and closed budget windows"
    AUDIT = "audit", "audit entries"
    EMBEDDINGS = "embeddings", "embeddings (long-term memories)"
    FILES = "files", "files and batch outputs"


class RetentionPolicy(models.Model):
    """A tenant's own retention for one kind of data, in place of the deployment's default."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="retention_policies")
    kind = models.CharField(max_length=16, choices=DataKind.choices)
    days = models.PositiveIntegerField(help_text="Rows older than this many days are purged; 0 keeps them forever.")

    class Meta:
        ordering = ["tenant", "kind"]
        verbose_name_plural = "retention policies"
        constraints = [models.UniqueConstraint(fields=["tenant", "kind"], name="retention_policy_unique")]

    def __str__(self) -> str:
        return f"{self.tenant}: {self.kind} {self.days or 'forever'} days"
