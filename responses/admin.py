"""The responses admin: what each response asked, beside its turn (read-only, tenant-scoped)."""

from __future__ import annotations

from django.contrib import admin

from responses.models import Response
from sentinel_site.admin import BigTableMixin, ReadOnlyAdmin, TenantFilter


@admin.register(Response)
class ResponseAdmin(BigTableMixin, ReadOnlyAdmin):
    list_display = ("id", "tenant", "model", "turn", "background", "store", "created_at")
    list_filter = (TenantFilter, "background", "store")
    list_select_related = ("tenant", "turn")
    search_fields = ("=id",)
    raw_id_fields = ("turn", "previous_response")
    date_hierarchy = "created_at"
    readonly_fields = [field.name for field in Response._meta.fields]
