"""The batches admin: files and batches with their progress, read-only and tenant-scoped."""

from __future__ import annotations

from django.contrib import admin

from batches.models import Batch, BatchLine, File
from sentinel_site import charts
from sentinel_site.admin import BigTableMixin, ReadOnlyAdmin, TenantFilter


@admin.register(File)
class FileAdmin(ReadOnlyAdmin):
    list_display = ("id", "tenant", "filename", "purpose", "bytes", "created_at")
    list_filter = (TenantFilter, "purpose")
    list_select_related = ("tenant",)
    search_fields = ("=id", "filename")
    exclude = ("content",)
    readonly_fields = ("id", "tenant", "filename", "purpose", "bytes", "created_at")


@admin.register(Batch)
class BatchAdmin(BigTableMixin, ReadOnlyAdmin):
    list_display = ("id", "tenant", "endpoint", "status", "progress", "created_at", "completed_at")
    list_filter = (TenantFilter, "status", "endpoint")
    list_select_related = ("tenant",)
    search_fields = ("=id",)
    date_hierarchy = "created_at"
    readonly_fields = ["progress", *(field.name for field in Batch._meta.fields)]

    @admin.display(description="progress (request_counts)")
    def progress(self, obj: Batch):
        # The counts the API answers as request_counts: lines finished either way against the total.
        return charts.progress(obj.completed, obj.failed, obj.total, state=obj.status)


@admin.register(BatchLine)
class BatchLineAdmin(BigTableMixin, ReadOnlyAdmin):
    tenant_path = "batch__tenant"
    list_display = ("id", "batch", "index", "custom_id", "state", "turn")
    list_filter = (TenantFilter, "state")
    list_select_related = ("batch",)
    search_fields = ("=custom_id", "=batch__id")
    raw_id_fields = ("batch", "turn")
    readonly_fields = [field.name for field in BatchLine._meta.fields]
