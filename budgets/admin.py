"""The governance admin: tenants and their operators, API keys, budgets, prices, the ledger, the audit log.

Every admin here is tenant-scoped (sentinel_site/admin.py): an operator sees only the tenants bound
to them. A new API key's plaintext is shown once, on the page that answers the form, and nowhere else.
"""

from decimal import Decimal

from django.contrib import admin, messages
from django.db.models import OuterRef, Subquery
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers

from budgets import audit, keys, spend
from budgets.models import ApiKey, AuditEntry, Budget, BudgetWindow, OperatorBinding, Price, Reservation, SpendEntry, Tenant
from sentinel_site import charts, money, tenant_summary
from sentinel_site.admin import (
    BigTableMixin,
    ReadOnlyAdmin,
    ReadOnlyInline,
    SuperuserOnlyMixin,
    TenantConsistentForm,
    TenantFilter,
    TenantScopedAdmin,
    lock_to_superusers,
)

# Users, groups and periodic tasks reach past every tenant. Their admin modules are imported before
# this one (autodiscovery follows INSTALLED_APPS, where they come first), so they can be locked here.
lock_to_superusers(admin.site, ("auth", "django_celery_beat"))


class OperatorBindingInline(SuperuserOnlyMixin, admin.TabularInline):
    model = OperatorBinding
    fields = ("user", "created_at")
    readonly_fields = ("created_at",)
    extra = 0
    verbose_name = "operator"
    verbose_name_plural = "operators bound to this tenant"


@admin.register(Tenant)
class TenantAdmin(TenantScopedAdmin):
    """Tenants; an operator sees only theirs. Creating, deleting and binding them is for superusers."""

    tenant_path = "id"
    list_display = ("name", "is_active", "created_at")
    search_fields = ("name",)
    list_filter = ("is_active",)

    def get_readonly_fields(self, request, obj=None):
        return (*super().get_readonly_fields(request, obj), *(("summary",) if obj is not None else ()))

    @admin.display(description="what this tenant has")
    def summary(self, obj: Tenant) -> str:
        return tenant_summary.render(obj)

    def get_inlines(self, request, obj):
        return [OperatorBindingInline] if request.user.is_superuser else []

    def has_add_permission(self, request) -> bool:
        return request.user.is_superuser

    def has_delete_permission(self, request, obj=None) -> bool:
        return request.user.is_superuser


@admin.register(OperatorBinding)
class OperatorBindingAdmin(SuperuserOnlyMixin, admin.ModelAdmin):
    """Which staff users may see which tenants (superusers see all and need no binding)."""

    list_display = ("user", "tenant", "created_at")
    list_filter = ("tenant",)
    list_select_related = ("user", "tenant")
    search_fields = ("user__username", "tenant__name")


@admin.register(ApiKey)
class ApiKeyAdmin(TenantScopedAdmin):
    list_display = ("display_key", "tenant", "name", "role", "created_at", "expires_at", "revoked_at", "last_used_at")
    list_filter = ("role", TenantFilter)
    list_select_related = ("tenant",)
    search_fields = ("key_id", "name", "tenant__name")
    readonly_fields = ("key_id", "created_at", "last_used_at", "revoked_at")
    fields = ("tenant", "name", "role", "expires_at", "key_id", "created_at", "last_used_at", "revoked_at")
    actions = ["revoke"]

    @admin.display(description="key")
    def display_key(self, obj: ApiKey) -> str:
        return keys.display(obj.key_id)

    def save_model(self, request, obj, form, change):
        actor = audit.actor_for_user(request.user)
        if change:
            if "role" in form.changed_data:
                audit.record("key.role_changed", actor=actor, tenant_id=obj.tenant_id, target=obj.key_id, data={"role": obj.role})
            return super().save_model(request, obj, form, change)
        issued, plaintext = ApiKey.issue(obj.tenant, role=obj.role, name=obj.name, expires_at=obj.expires_at, actor=actor)
        # The admin goes on with `obj` (its log entry, the response): make it the row issue() created.
        for field in ApiKey._meta.concrete_fields:
            setattr(obj, field.attname, getattr(issued, field.attname))
        obj._state.adding, obj._state.db = False, issued._state.db
        # Held by this request only, for the page that answers it: never a message (a cookie), the
        # session, the database or a log.
        request.sentinel_new_api_key = plaintext

    def response_add(self, request, obj, post_url_continue=None):
        plaintext = request.__dict__.pop("sentinel_new_api_key", None)
        if plaintext is None:
            return super().response_add(request, obj, post_url_continue)
        context = {
            **self.admin_site.each_context(request),
            "title": "API key created",
            "opts": self.opts,
            "api_key": obj,
            "plaintext": plaintext,
            "change_url": reverse("admin:budgets_apikey_change", args=[obj.pk], current_app=self.admin_site.name),
            "changelist_url": reverse("admin:budgets_apikey_changelist", current_app=self.admin_site.name),
        }
        response = TemplateResponse(request, "admin/budgets/apikey/created.html", context)
        add_never_cache_headers(response)  # no browser or proxy keeps the page that holds the secret
        return response

    @admin.action(description="Revoke the selected keys", permissions=["change"])
    def revoke(self, request, queryset):
        count = sum(key.revoke(actor=audit.actor_for_user(request.user)) for key in queryset)
        self.message_user(request, f"Revoked {count} key(s).")


class BudgetWindowInline(ReadOnlyInline):
    model = BudgetWindow
    fields = ("starts", "settled_text", "reserved_text", "tokens")
    readonly_fields = fields
    ordering = ("-starts",)

    @admin.display(description="settled")
    def settled_text(self, obj: BudgetWindow) -> str:
        return money.money(obj.settled)

    @admin.display(description="reserved")
    def reserved_text(self, obj: BudgetWindow) -> str:
        return money.money(obj.reserved)


class BudgetForm(TenantConsistentForm):
    """Shows a limit as it was set: `25`, not `25.000000`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if isinstance(self.initial.get("limit"), Decimal):
            self.initial["limit"] = f"{self.initial['limit'].normalize():f}"


@admin.register(Budget)
class BudgetAdmin(TenantScopedAdmin):
    """Budgets with their current spend against the limit."""

    form = BudgetForm

    list_display = ("__str__", "tenant", "period", "limit_text", "current_spend", "fallback_model")
    list_filter = ("period", TenantFilter)
    list_select_related = ("tenant", "api_key")
    raw_id_fields = ("api_key",)
    readonly_fields = ("current_spend",)
    inlines = [BudgetWindowInline]

    @admin.display(description="limit", ordering="limit")
    def limit_text(self, obj: Budget) -> str:
        return money.limit(obj.limit)

    @admin.display(description="spent + held this window, against the limit")
    def current_spend(self, obj: Budget) -> str:
        if obj.pk is None:
            return "—"
        window = obj.windows.filter(starts=spend.window_start(obj.period)).first()
        settled, reserved = (window.settled, window.reserved) if window else (0, 0)
        return charts.meter(settled, reserved, obj.limit, obj.soft_limit_share)


@admin.register(Price)
class PriceAdmin(TenantScopedAdmin):
    """Prices: global ones (no tenant) are the deployment's, shown to operators but set by superusers."""

    tenant_shared_rows = True
    list_display = ("model", "endpoint", "tenant", "input_price", "output_price", "updated_at")
    list_filter = (TenantFilter,)
    list_select_related = ("tenant",)
    search_fields = ("model",)

    @admin.display(description="input per million tokens", ordering="input_per_mtok")
    def input_price(self, obj: Price) -> str:
        return money.limit(obj.input_per_mtok)

    @admin.display(description="output per million tokens", ordering="output_per_mtok")
    def output_price(self, obj: Price) -> str:
        return money.limit(obj.output_per_mtok)


@admin.register(Reservation)
class ReservationAdmin(BigTableMixin, ReadOnlyAdmin):
    list_display = ("id", "tenant", "amount_text", "status", "created_at", "expires_at", "closed_at")
    list_filter = ("status", TenantFilter)
    list_select_related = ("tenant",)

    @admin.display(description="amount", ordering="amount")
    def amount_text(self, obj: Reservation) -> str:
        return money.money(obj.amount)


@admin.register(SpendEntry)
class SpendEntryAdmin(BigTableMixin, ReadOnlyAdmin):
    """Usage per tenant, key and model over time: filter and sort the ledger."""

    list_display = ("created_at", "tenant", "api_key", "model", "prompt_tokens", "completion_tokens", "cost_text")
    # A date filter, not date_hierarchy: its year links cost a DISTINCT over the whole ledger per page.
    list_filter = (TenantFilter, "model", ("created_at", admin.DateFieldListFilter))
    list_select_related = ("tenant", "api_key__tenant")

    @admin.display(description="cost", ordering="cost")
    def cost_text(self, obj: SpendEntry) -> str:
        return money.money(obj.cost)


@admin.register(AuditEntry)
class AuditEntryAdmin(BigTableMixin, ReadOnlyAdmin):
    """The audit log, read-only, with a verify action for the whole chain (superusers: it reads every tenant's entries).

    Entries without a tenant (admin changes, system events) are the deployment's: superusers only.
    """

    tenant_path = "tenant_id"  # a plain id may replace the foreign key: scope on the column either way
    list_display = ("seq", "created_at", "action", "actor", "tenant_name", "target")
    list_filter = ("action", TenantFilter, ("created_at", admin.DateFieldListFilter))
    search_fields = ("actor", "target", "action")
    actions = ["verify_chain"]

    def get_queryset(self, request):
        names = Tenant.objects.filter(id=OuterRef("tenant_id")).values("name")[:1]
        return super().get_queryset(request).annotate(tenant_name=Subquery(names))

    @admin.display(description="tenant")
    def tenant_name(self, obj: AuditEntry) -> str:
        return obj.tenant_name or "—"

    def has_verify_chain_permission(self, request) -> bool:
        return request.user.is_superuser

    @admin.action(description="Verify the whole audit chain", permissions=["verify_chain"])
    def verify_chain(self, request, queryset):
        bad = audit.verify()
        if bad is None:
            self.message_user(
                request, f"The audit chain is intact ({AuditEntry.objects.count()} entries, checked {timezone.now():%H:%M:%S})."
            )
        else:
            self.message_user(request, f"The audit chain is broken at sequence number {bad}.", level=messages.ERROR)
