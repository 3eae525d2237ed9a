from django.contrib import admin

from lifecycle.models import RetentionPolicy
from sentinel_site.admin import SuperuserOnlyMixin


@admin.register(RetentionPolicy)
class RetentionPolicyAdmin(SuperuserOnlyMixin, admin.ModelAdmin):
    """How long a tenant's data is kept is the deployment's decision (compliance), not its operators'."""

    list_display = ("tenant", "kind", "days")
    list_filter = ("kind",)
    list_select_related = ("tenant",)
    raw_id_fields = ("tenant",)
