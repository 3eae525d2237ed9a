from django.contrib import admin, messages
from django.utils import timezone
from django.utils.html import format_html

from budgets import audit, keys, spend
from budgets.models import ApiKey, AuditEntry, Budget, BudgetWindow, Price, Reservation, SpendEntry, Tenant


def _actor(request) -> str:
    return f"user:{request.user.get_username()}"


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ("name", "is_active", "created_at")
    search_fields = ("name",)
    list_filter = ("is_active",)


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("display_key", "tenant", "name", "role", "created_at", "expires_at", "revoked_at", "last_used_at")
    list_filter = ("role", "tenant")
    list_select_related = ("tenant",)
    search_fields = ("key_id", "name", "tenant__name")
    readonly_fields = ("key_id", "created_at", "last_used_at", "revoked_at")
    fields = ("tenant", "name", "role", "expires_at", "key_id", "created_at", "last_used_at", "revoked_at")
    actions = ["revoke"]

    @admin.display(description="key")
    def display_key(self, obj: ApiKey) -> str:
        return keys.display(obj.key_id)

    def save_model(self, request, obj, form, change):
        if change:
            if "role" in form.changed_data:
                audit.record("key.role_changed", actor=_actor(request), tenant_id=obj.tenant_id, target=obj.key_id, data={"role": obj.role})
            return super().save_model(request, obj, form, change)
        new = keys.generate()
        obj.key_id, obj.salt, obj.hashed_secret = new.key_id, new.salt, new.hashed
        super().save_model(request, obj, form, change)
        audit.record("key.created", actor=_actor(request), tenant_id=obj.tenant_id, target=obj.key_id, data={"role": obj.role})
        messages.warning(request, f"The new API key is {new.plaintext} — copy it now; it will not be shown again.")

    @admin.action(description="Revoke the selected keys")
    def revoke(self, request, queryset):
        count = sum(key.revoke(actor=_actor(request)) for key in queryset)
        self.message_user(request, f"Revoked {count} key(s).")


class BudgetWindowInline(admin.TabularInline):
    model = BudgetWindow
    fields = ("starts", "settled", "reserved", "tokens")
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ("-starts",)

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Budget)
class BudgetAdmin(admin.ModelAdmin):
    """Budgets with their current spend against the limit."""

    list_display = ("__str__", "tenant", "period", "limit", "current_spend", "fallback_model")
    list_filter = ("period", "tenant")
    list_select_related = ("tenant", "api_key")
    raw_id_fields = ("api_key",)
    inlines = [BudgetWindowInline]

    @admin.display(description="spent / reserved this window")
    def current_spend(self, obj: Budget) -> str:
        window = obj.windows.filter(starts=spend.window_start(obj.period)).first()
        if window is None:
            return "—"
        share = (window.settled + window.reserved) / obj.limit * 100 if obj.limit else 100
        color = "#b00" if share >= 100 else ("#c80" if share >= obj.soft_limit_share * 100 else "#080")
        return format_html('<span style="color:{}">${} + ${} ({}%)</span>', color, window.settled, window.reserved, f"{share:.0f}")


@admin.register(Price)
class PriceAdmin(admin.ModelAdmin):
    list_display = ("model", "endpoint", "tenant", "input_per_mtok", "output_per_mtok", "updated_at")
    list_filter = ("tenant",)
    search_fields = ("model",)

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        spend._price_cache.clear()


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Reservation)
class ReservationAdmin(ReadOnlyAdmin):
    list_display = ("id", "tenant", "amount", "status", "created_at", "expires_at", "closed_at")
    list_filter = ("status",)
    list_select_related = ("tenant",)
    show_full_result_count = False


@admin.register(SpendEntry)
class SpendEntryAdmin(ReadOnlyAdmin):
    """Usage per tenant, key and model over time: filter and sort the ledger."""

    list_display = ("created_at", "tenant", "api_key", "model", "prompt_tokens", "completion_tokens", "cost")
    list_filter = ("tenant", "model")
    list_select_related = ("tenant", "api_key")
    date_hierarchy = "created_at"
    show_full_result_count = False


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    """The audit log, read-only, with a verify action for the whole chain."""

    list_display = ("seq", "created_at", "action", "actor", "tenant", "target")
    list_filter = ("action", "tenant")
    search_fields = ("actor", "target", "action")
    date_hierarchy = "created_at"
    actions = ["verify_chain"]
    show_full_result_count = False

    @admin.action(description="Verify the whole audit chain")
    def verify_chain(self, request, queryset):
        bad = audit.verify()
        if bad is None:
            self.message_user(
                request, f"The audit chain is intact ({AuditEntry.objects.count()} entries, checked {timezone.now():%H:%M:%S})."
            )
        else:
            self.message_user(request, f"The audit chain is broken at sequence number {bad}.", level=messages.ERROR)
