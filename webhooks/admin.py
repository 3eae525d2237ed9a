"""The webhooks admin: endpoints (the secret never shown), and the delivery log with every attempt
and a re-deliver action."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from sentinel_site.admin import BigTableMixin, ReadOnlyAdmin, ReadOnlyInline, TenantFilter, TenantScopedAdmin
from webhooks import outbox, tasks
from webhooks.models import Delivery, DeliveryAttempt, WebhookEndpoint


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(TenantScopedAdmin):
    list_display = ("id", "tenant", "name", "url", "enabled", "created_at")
    list_filter = (TenantFilter, "enabled")
    list_select_related = ("tenant",)
    search_fields = ("=id", "url", "name")
    fields = ("tenant", "name", "url", "event_types", "enabled")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # through the API, which shows the secret once


class AttemptInline(ReadOnlyInline):
    model = DeliveryAttempt
    fields = ("number", "status_code", "error", "duration_ms", "created_at")
    readonly_fields = fields


@admin.register(Delivery)
class DeliveryAdmin(BigTableMixin, ReadOnlyAdmin):
    list_display = ("id", "tenant", "endpoint", "event_type", "status", "attempts", "last_status_code", "created_at", "delivered_at")
    list_filter = (TenantFilter, "status", "event_type")
    list_select_related = ("tenant", "endpoint")
    search_fields = ("=id", "=event_id")
    date_hierarchy = "created_at"
    inlines = (AttemptInline,)
    actions = ("redeliver",)
    readonly_fields = [field.name for field in Delivery._meta.fields]

    def has_redeliver_permission(self, request: HttpRequest) -> bool:
        # change_delivery stands for agents:write, who manages endpoints (budgets/admin_roles.py): the log stays read-only.
        return request.user.has_perm("webhooks.change_delivery")

    @admin.action(description="Deliver again", permissions=["redeliver"])
    def redeliver(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        for delivery in queryset:
            outbox.redeliver(delivery, tasks.wake)
        self.message_user(request, f"{queryset.count()} delivery(ies) queued again.")
