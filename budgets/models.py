"""Governance models: tenants and their operators, API keys, prices, budgets, reservations and the
spend ledger. The audit log's tables are defined with its chain in budgets/audit.py and imported
here, so they are `budgets.models.AuditEntry` (and Head, Checkpoint) like every other model."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from budgets import audit, keys
from budgets.audit import AuditBase, AuditCheckpoint, AuditEntry, AuditHead  # noqa: F401 - the audit log's tables, named here like every model
from budgets.roles import Role
from sentinel_site import config_cache, money


class Tenant(models.Model):
    """A customer of Sentinel. Every other row belongs to exactly one tenant."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.SlugField(max_length=64, unique=True)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class OperatorBinding(models.Model):
    """Binds an admin user to a tenant whose rows they may see and manage (see sentinel_site/admin.py).

    Superusers see every tenant and need none; any other staff user sees exactly the tenants bound
    here, and nothing when none is. Their role group decides what they may do with those rows.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tenant_bindings")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="operator_bindings")
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["tenant", "user"]
        constraints = [models.UniqueConstraint(fields=["user", "tenant"], name="operator_binding_unique")]

    def __str__(self) -> str:
        return f"{self.user} on {self.tenant}"


class ApiKeyQuerySet(models.QuerySet):
    def usable(self) -> ApiKeyQuerySet:
        now = timezone.now()
        return self.filter(revoked_at__isnull=True, tenant__is_active=True).filter(
            models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now)
        )


class ApiKey(models.Model):
    """A credential for the API. Only a salted hash of its secret is stored (see budgets/keys.py)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100, blank=True)
    key_id = models.CharField(max_length=12, unique=True, editable=False)
    salt = models.CharField(max_length=32, editable=False)
    hashed_secret = models.CharField(max_length=64, editable=False)
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.DEVELOPER)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    # A rotated key spends against the budgets of the key it replaced (the first of its line), so
    # rotating a key never resets or drops its per-key budgets.
    budget_key = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="successors", editable=False,
        help_text="The key whose per-key budgets this key spends against (set by rotation).",
    )  # fmt: skip

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{keys.display(self.key_id)} ({self.tenant.name}, {self.role})"

    @classmethod
    def issue(
        cls, tenant: Tenant, *, role: str = Role.DEVELOPER, name: str = "", expires_at=None, actor: str = audit.SYSTEM
    ) -> tuple[ApiKey, str]:
        """Create a key and return it with its plaintext, which is never stored or shown again."""
        new = keys.generate()
        api_key = cls.objects.create(
            tenant=tenant,
            name=name,
            key_id=new.key_id,
            salt=new.salt,
            hashed_secret=new.hashed,
            role=role,
            expires_at=expires_at,
        )
        audit.record("key.created", actor=actor, tenant_id=tenant.id, target=new.key_id, data={"role": role, "name": name})
        return api_key, new.plaintext

    def revoke(self, *, actor: str) -> bool:
        """Revoke now; False if it already was."""
        if not ApiKey.objects.filter(pk=self.pk, revoked_at__isnull=True).update(revoked_at=timezone.now()):
            return False
        config_cache.changed()  # an update sends no signal
        audit.record("key.revoked", actor=actor, tenant_id=self.tenant_id, target=self.key_id)
        return True

    @property
    def is_usable(self) -> bool:
        if self.revoked_at is not None or not self.tenant.is_active:
            return False
        return self.expires_at is None or self.expires_at > timezone.now()


class Price(models.Model):
    """What a model costs, per million tokens. No row (or zero) means free, but tokens still count."""

    tenant = models.ForeignKey(
        Tenant, null=True, blank=True, on_delete=models.CASCADE, related_name="prices", help_text="Empty: the global price."
    )
    model = models.CharField(max_length=200, help_text="Provider model name, as agents name it.")
    endpoint = models.CharField(max_length=300, blank=True, help_text="Provider base URL; blank matches any.")
    input_per_mtok = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    output_per_mtok = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["model", "endpoint"]
        constraints = [
            models.UniqueConstraint(fields=["model", "endpoint"], condition=models.Q(tenant__isnull=True), name="price_global_unique"),
            models.UniqueConstraint(
                fields=["tenant", "model", "endpoint"], condition=models.Q(tenant__isnull=False), name="price_tenant_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model}: {money.limit(self.input_per_mtok)}/{money.limit(self.output_per_mtok)} per Mtok"


class Period(models.TextChoices):
    DAILY = "daily"
    MONTHLY = "monthly"


class Budget(models.Model):
    """A spending cap for a tenant (api_key empty) or for one key, per day or month, in USD."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="budgets")
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.CASCADE, related_name="budgets")
    period = models.CharField(max_length=8, choices=Period.choices)
    limit = models.DecimalField(max_digits=14, decimal_places=6, help_text="USD per period.")
    soft_limit_share = models.DecimalField(
        max_digits=4, decimal_places=3, default=0.8, help_text="Past this share of the limit, agents use fallback_model if set."
    )
    fallback_model = models.CharField(max_length=200, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["tenant", "api_key", "period"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "period"], condition=models.Q(api_key__isnull=True), name="budget_one_per_tenant_period"
            ),
            models.UniqueConstraint(
                fields=["api_key", "period"], condition=models.Q(api_key__isnull=False), name="budget_one_per_key_period"
            ),
            models.CheckConstraint(condition=models.Q(limit__gte=0), name="budget_limit_not_negative"),
        ]

    def __str__(self) -> str:
        scope = keys.display(self.api_key.key_id) if self.api_key_id else self.tenant.name
        return f"{scope} {self.period} {money.limit(self.limit)}"


class BudgetWindow(models.Model):
    """The counters of one budget in one period window. `settled + reserved <= limit`, always."""

    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="windows")
    starts = models.DateField()
    reserved = models.DecimalField(max_digits=16, decimal_places=8, default=0)
    settled = models.DecimalField(max_digits=16, decimal_places=8, default=0)
    tokens = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["-starts"]
        constraints = [
            models.UniqueConstraint(fields=["budget", "starts"], name="budget_window_unique"),
            models.CheckConstraint(condition=models.Q(reserved__gte=0), name="budget_window_reserved_not_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.budget} from {self.starts}"


class Reservation(models.Model):
    """Money held against every applicable budget window before a provider call."""

    class Status(models.TextChoices):
        HELD = "held"
        SETTLED = "settled"
        RELEASED = "released"
        EXPIRED = "expired"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    turn = models.ForeignKey("agents.Turn", null=True, blank=True, on_delete=models.SET_NULL, related_name="reservations")
    windows = models.ManyToManyField(BudgetWindow, related_name="+")
    amount = models.DecimalField(max_digits=16, decimal_places=8)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.HELD)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField()
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["expires_at"], condition=models.Q(status="held"), name="reservation_held_expiry")]

    def __str__(self) -> str:
        return f"reservation {self.amount} ({self.status})"


class SpendEntry(models.Model):
    """The append-only spend ledger: the source of truth the budget counters are checked against."""

    id = models.BigAutoField(primary_key=True)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    turn = models.ForeignKey("agents.Turn", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    reservation = models.OneToOneField(Reservation, null=True, blank=True, on_delete=models.SET_NULL, related_name="entry")
    model = models.CharField(max_length=200, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(max_digits=16, decimal_places=8, default=0)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "spend entries"
        indexes = [models.Index(fields=["tenant", "created_at"], name="spend_tenant_time")]

    def __str__(self) -> str:
        return f"${self.cost} {self.model}"
