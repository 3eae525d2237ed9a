"""Model groups: a name an agent's `model` can carry, served by several deployments.

A group belongs to a tenant, or to nobody (a global group the operator offers every tenant); a
tenant's own group of the same name wins. Each deployment is one OpenAI-compatible endpoint with
its credential, provider model, weight and rate limits. A tenant's deployment URL passes the egress
policy like an agent's own provider URL (it is tenant-chosen); a global one is the operator's.
Prices are budgets.Price rows for the deployment's provider model (an endpoint-specific row, keyed
by the deployment's base URL, prices one deployment apart from the others).
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models

from budgets.models import Tenant
from sentinel_site import egress


class Strategy(models.TextChoices):
    WEIGHTED = "weighted", "Weighted random"
    LEAST_BUSY = "least_busy", "Least busy (fewest calls in flight)"
    LOWEST_LATENCY = "lowest_latency", "Lowest latency (measured, decayed)"


def _names(value: object) -> None:
    if not isinstance(value, list) or len(value) > 10 or not all(isinstance(name, str) and 0 < len(name) <= 64 for name in value):
        raise ValidationError("a list of at most 10 model group names")


class ModelGroup(models.Model):
    """A routable model name: its deployments, how one is chosen, and where to go when they fail."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, null=True, blank=True, related_name="model_groups")
    name = models.SlugField(max_length=64, help_text="An agent whose `model` is this name is routed through this group.")
    strategy = models.CharField(max_length=16, choices=Strategy.choices, default=Strategy.WEIGHTED)
    context_window = models.PositiveIntegerField(null=True, blank=True, help_text="Tokens; informative (name larger-window groups below).")
    fallbacks = models.JSONField(
        default=list, blank=True, validators=[_names], help_text="Groups tried in order when every deployment fails or is rate limited."
    )
    context_window_fallbacks = models.JSONField(
        default=list, blank=True, validators=[_names], help_text="Groups tried in order when a prompt is too long for it."
    )
    content_policy_fallbacks = models.JSONField(
        default=list, blank=True, validators=[_names], help_text="Groups tried in order when the provider refuses on content policy."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["name"], condition=models.Q(tenant__isnull=True), name="modelgroup_global_unique"),
            models.UniqueConstraint(fields=["tenant", "name"], condition=models.Q(tenant__isnull=False), name="modelgroup_tenant_unique"),
        ]

    def __str__(self) -> str:
        return self.name if self.tenant_id else f"{self.name} (global)"

    def clean(self) -> None:
        super().clean()
        for field in ("fallbacks", "context_window_fallbacks", "content_policy_fallbacks"):
            if self.name in (getattr(self, field) or []):
                raise ValidationError({field: "A group cannot fall back to itself."})


class Deployment(models.Model):
    """One endpoint serving a model group. The credential is write-only everywhere."""

    group = models.ForeignKey(ModelGroup, on_delete=models.CASCADE, related_name="deployments")
    name = models.SlugField(max_length=64)
    base_url = models.URLField(help_text="OpenAI-compatible base URL; a tenant's is checked against SENTINEL_PROVIDER_ALLOWED_HOSTS.")
    api_key = models.CharField(max_length=500, blank=True, help_text="Write-only. Sent only to this deployment's base URL.")
    provider_model = models.CharField(max_length=200, help_text="The model name this endpoint is called with.")
    weight = models.PositiveIntegerField(default=1, help_text="Share of calls under the weighted strategy (0: only when others are out).")
    rpm = models.PositiveIntegerField(null=True, blank=True, help_text="Requests per minute; blank: no limit.")
    tpm = models.PositiveIntegerField(null=True, blank=True, help_text="Tokens per minute; blank: no limit.")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["group", "name"]
        constraints = [models.UniqueConstraint(fields=["group", "name"], name="deployment_name_unique")]

    def __str__(self) -> str:
        return f"{self.group.name}/{self.name}"

    def clean(self) -> None:
        super().clean()
        group = self.group if self.group_id is not None or "group" in self._state.fields_cache else None
        tenant_owned = group is not None and group.tenant_id is not None
        if self.base_url and tenant_owned:
            try:
                egress.check_url(self.base_url)
            except egress.EgressDenied as denied:
                raise ValidationError({"base_url": f"This URL is not allowed: {denied}."}) from None


class Policy(models.Model):
    """How one agent's requests are shared and cached (each opt-in; no row: neither). Kept beside
    the agent rather than on it, so routing's knobs stay in routing."""

    agent = models.OneToOneField("agents.Agent", on_delete=models.CASCADE, related_name="routing_policy")
    dedup = models.BooleanField(
        default=False,
        help_text="Identical in-flight requests without a conversation share one provider call, sampling ones too "
        "(Sentinel-Dedup: on|off overrides).",
    )
    dedup_deterministic = models.BooleanField(
        default=True,
        help_text="Identical in-flight requests without a conversation whose answer is deterministic (temperature 0, or a seed) "
        "share one provider call without being asked (off: only when `dedup` or Sentinel-Dedup: on asks).",
    )
    cache_seconds = models.PositiveIntegerField(
        default=0, help_text="Answers are kept this long for identical requests that send `Sentinel-Cache: use` (0: no cache)."
    )
    cache_always = models.BooleanField(default=False, help_text="Use the cache without the request asking for it.")
    cache_history = models.BooleanField(
        default=False, help_text="Cache requests that carry conversation history too (off: only a single user turn)."
    )
    adaptive = models.BooleanField(
        default=False, help_text="Route each call by its prompt (the groups below) and, past a budget's soft limit, by price."
    )
    simple_group = models.SlugField(max_length=64, blank=True, help_text="The model group for short prompts without tools.")
    complex_group = models.SlugField(max_length=64, blank=True, help_text="The model group for long prompts, or prompts with tools.")
    complex_above_tokens = models.PositiveIntegerField(
        default=8000, help_text="Prompts estimated above this many tokens are complex (8000: measured, bench/routing_quality.py)."
    )
    complex_with_tools = models.BooleanField(default=True, help_text="A request that offers tools is complex.")
    complex_by_cues = models.BooleanField(
        default=True,
        help_text="Also call a prompt complex by its cues (code, 'step by step', 'explain', 'compare', several sentences: "
        "routing/adaptive.py's rules, measured in bench/routing_quality.py).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["agent"]
        verbose_name_plural = "policies"

    def __str__(self) -> str:
        return f"routing policy of {self.agent}"


class SharedUsage(models.Model):
    """A follower of a shared turn, accounted: the key that writes its zero-cost ledger entry once,
    whichever process gets there first (its own request when its stream ends, or the leader's). A
    key is needed only while either may still write (SYNC_WAIT_SECONDS after the turn): older ones
    are pruned (routing.dedup.write_usage, at most once a minute per process)."""

    turn_id = models.UUIDField()
    follower = models.CharField(max_length=120)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["turn_id", "follower"], name="routing_shared_usage_once")]
        indexes = [models.Index(fields=["created_at"], name="routing_shared_usage_age")]

    def __str__(self) -> str:
        return f"{self.follower} on {self.turn_id}"
