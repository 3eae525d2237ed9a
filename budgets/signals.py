"""Model signals of the governance app: default budgets for new tenants, admin changes audited."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.contrib.admin.models import LogEntry
from django.core.exceptions import ObjectDoesNotExist
from django.db.models.signals import post_save
from django.dispatch import receiver

from budgets import audit
from budgets.models import Budget, Period, Tenant


@receiver(post_save, sender=Tenant)
def give_new_tenants_the_default_budgets(sender, instance: Tenant, created: bool, **kwargs) -> None:
    if not created:
        return
    conf = settings.SENTINEL
    for period, limit in ((Period.DAILY, conf["DEFAULT_DAILY_BUDGET"]), (Period.MONTHLY, conf["DEFAULT_MONTHLY_BUDGET"])):
        Budget.objects.create(tenant=instance, period=period, limit=Decimal(str(limit)))
    audit.record("tenant.created", actor=audit.SYSTEM, tenant_id=instance.id, target=instance.name)


@receiver(post_save, sender=LogEntry)
def audit_admin_changes(sender, instance: LogEntry, created: bool, **kwargs) -> None:
    if not created:
        return
    # The tenant the changed object belongs to, so a tenant's operators see their admin changes too.
    try:
        changed = instance.get_edited_object()
    except ObjectDoesNotExist:
        changed = None
    tenant_id = changed.pk if isinstance(changed, Tenant) else getattr(changed, "tenant_id", None)
    audit.record(
        "admin.change",
        actor=audit.actor_for_user(instance.user),
        tenant_id=tenant_id,
        target=f"{instance.content_type.app_label}.{instance.content_type.model}:{instance.object_id}",
        data={
            "flag": {1: "added", 2: "changed", 3: "deleted"}.get(instance.action_flag, "?"),
            "change": instance.get_change_message()[:500],
        },
    )
