"""The routing admin: model groups with their deployments inline, each deployment's key write-only.
Tenant-scoped like every admin (sentinel_site/admin.py): global groups (no tenant) are seen by every
operator and changed only by superusers."""

from django import forms
from django.contrib import admin
from django.db.models import Count
from django.http import HttpRequest

from budgets import audit
from routing import cache, dedup, selection
from routing.groups import DeploymentSpec
from routing.models import Deployment, ModelGroup, Policy
from sentinel_site.admin import TenantFilter, TenantScopedAdmin, visible_tenant_ids

WRITE_ONLY_FIELDS = ("new_api_key", "clear_api_key")


class DeploymentForm(forms.ModelForm):
    """A deployment with its key write-only: never rendered, only replaced or cleared."""

    new_api_key = forms.CharField(label="New API key", required=False, max_length=500, widget=forms.PasswordInput(render_value=False))
    clear_api_key = forms.BooleanField(label="Clear the API key", required=False)

    class Meta:
        model = Deployment
        fields = ("name", "base_url", "provider_model", "weight", "rpm", "tpm", "enabled")

    def clean(self):
        cleaned = super().clean()
        new, clear = cleaned.get("new_api_key"), cleaned.get("clear_api_key")
        if new and clear:
            self.add_error("clear_api_key", "Set a new key or clear it, not both.")
        elif new:
            self.instance.api_key = new
        elif clear:
            self.instance.api_key = ""
        return cleaned


class DeploymentInline(admin.StackedInline):
    model = Deployment
    form = DeploymentForm
    extra = 0
    readonly_fields = ("has_api_key", "live_state")
    fields = ("name", "base_url", "has_api_key", *WRITE_ONLY_FIELDS, "provider_model", "weight", "rpm", "tpm", "enabled", "live_state")

    @admin.display(boolean=True, description="API key set")
    def has_api_key(self, obj: Deployment) -> bool:
        return bool(obj.api_key)

    @admin.display(description="now")
    def live_state(self, obj: Deployment) -> str:
        """Breaker, calls in flight, this minute's requests and tokens, measured latency: what routing reads.
        A global group's breakers are per tenant: not one state to show."""
        if obj.pk is None:
            return "-"
        spec = DeploymentSpec(obj.id, obj.name, obj.base_url, "", obj.provider_model, obj.weight, obj.rpm, obj.tpm)
        known = selection.live_state([spec], obj.group.tenant_id).get(obj.id)
        if known is None:
            return "routing state unreadable"
        latency = f"{known['latency']:.0f} ms" if known["latency"] is not None else "not measured"
        breaker = known["breaker"] if obj.group.tenant_id is not None else "per tenant"
        return (
            f"breaker {breaker}; {known['busy']} in flight; {known['rpm']} requests, {known['tpm']} tokens this minute; latency {latency}"
        )

    def _shared(self, request: HttpRequest, obj: ModelGroup | None) -> bool:
        return obj is not None and obj.tenant_id is None and visible_tenant_ids(request) is not None

    def has_add_permission(self, request: HttpRequest, obj: ModelGroup | None = None) -> bool:
        return not self._shared(request, obj) and super().has_add_permission(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: ModelGroup | None = None) -> bool:
        return not self._shared(request, obj) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: ModelGroup | None = None) -> bool:
        return not self._shared(request, obj) and super().has_delete_permission(request, obj)

    def get_fields(self, request: HttpRequest, obj: ModelGroup | None = None):
        if self.has_change_permission(request, obj):
            return self.fields
        return [f for f in self.fields if f not in WRITE_ONLY_FIELDS]  # a view-only page has no key to show


@admin.register(ModelGroup)
class ModelGroupAdmin(TenantScopedAdmin):
    tenant_shared_rows = True
    inlines = (DeploymentInline,)
    list_display = ("name", "tenant", "strategy", "deployment_count", "updated_at")
    list_filter = (TenantFilter, "strategy")
    list_select_related = ("tenant",)
    search_fields = ("name",)
    fields = ("tenant", "name", "strategy", "context_window", "fallbacks", "context_window_fallbacks", "content_policy_fallbacks")

    def get_queryset(self, request: HttpRequest):
        return super().get_queryset(request).annotate(deployment_total=Count("deployments"))

    @admin.display(description="deployments", ordering="deployment_total")
    def deployment_count(self, obj: ModelGroup) -> int:
        return obj.deployment_total


@admin.register(Policy)
class PolicyAdmin(TenantScopedAdmin):
    """Agents' shared-stream and cache policies, with each cache's hit rate and a purge action."""

    tenant_path = "agent__tenant"
    list_display = ("agent", "tenant_name", "dedup", "cache_seconds", "cache_always", "cache_history", "cache_hit_rate", "dedup_saved")
    list_select_related = ("agent__tenant",)
    list_filter = (TenantFilter, "dedup")
    search_fields = ("agent__name",)
    raw_id_fields = ("agent",)
    fields = (
        "agent",
        "dedup",
        "dedup_deterministic",
        "cache_seconds",
        "cache_always",
        "cache_history",
        "adaptive",
        "simple_group",
        "complex_group",
        "complex_above_tokens",
        "complex_with_tools",
        "complex_by_cues",
    )
    actions = ("purge_cache",)

    @admin.display(description="tenant", ordering="agent__tenant__name")
    def tenant_name(self, obj: Policy) -> str:
        return obj.agent.tenant.name

    @admin.display(description="cache hits")
    def cache_hit_rate(self, obj: Policy) -> str:
        counted = cache.stats(obj.agent_id)
        lookups = counted["hits"] + counted["misses"]
        return f"{counted['hits']}/{lookups} ({counted['hits'] / lookups:.0%})" if lookups else "-"

    @admin.display(description="calls saved by shared streams")
    def dedup_saved(self, obj: Policy) -> int:
        return dedup.saved(obj.agent_id)

    @admin.action(description="Purge the response cache of the selected agents")
    def purge_cache(self, request: HttpRequest, queryset) -> None:
        total = 0
        for policy in queryset.select_related("agent"):
            purged = cache.purge(policy.agent.tenant_id, policy.agent_id)
            total += purged
            audit.record(
                "routing_cache.purged",
                actor=audit.actor_for_user(request.user),
                tenant_id=policy.agent.tenant_id,
                target=str(policy.agent_id),
                data={"agent": policy.agent.name, "purged": purged},
            )
        self.message_user(request, f"{total} cached answers purged.")
