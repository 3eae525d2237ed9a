"""The API's roles as Django admin groups ("Sentinel viewer", ...), kept in sync after every migrate.

An operator gives a staff user the group of their role; the admin then allows exactly what the role
allows through the API: viewers look, executors re-drive dead turns and forget memories, developers
manage agents, admins govern keys, budgets and audit. A group grants model permissions only: which
rows a staff user sees is their tenant binding (budgets.OperatorBinding; sentinel_site/admin.py).
Creating tenants, binding operators, users and groups, and periodic tasks are for superusers, so no
group grants them.
"""

from __future__ import annotations

from django.contrib.auth.models import Group, Permission

from budgets.roles import AGENTS_WRITE, AUDIT_READ, BUDGETS_ADMIN, KEYS_ADMIN, MEMORY_WRITE, PERMISSIONS, TURNS_EXECUTE

# Which admin model permissions each scope stands for (view_* for every model goes to every role).
SCOPE_PERMISSIONS = {
    AGENTS_WRITE: [
        "add_agent",
        "change_agent",
        "delete_agent",
        "change_webhookendpoint",
        "delete_webhookendpoint",
        "change_delivery",
        *(f"{verb}_{model}" for model in ("modelgroup", "deployment") for verb in ("add", "change", "delete")),
    ],
    # the re-drive, re-run, cancel/interrupt/resume and approve/deny actions
    TURNS_EXECUTE: ["change_deadletter", "change_run", "change_turn", "change_approval"],
    MEMORY_WRITE: ["delete_memory", "change_conversation"],
    BUDGETS_ADMIN: ["add_budget", "change_budget", "delete_budget", "add_price", "change_price", "delete_price"],
    KEYS_ADMIN: ["add_apikey", "change_apikey", "change_tenant"],
    AUDIT_READ: ["view_auditentry"],
}
APPS = ("agents", "memory", "budgets", "runs", "batches", "responses", "webhooks", "routing")
# Views no role gets: the audit log is for AUDIT_READ, bindings are for superusers.
WITHHELD_VIEWS = ("view_auditentry", "view_operatorbinding")


def group_name(role: str) -> str:
    return f"Sentinel {role}"


def sync_groups(**kwargs) -> None:
    views = Permission.objects.filter(content_type__app_label__in=APPS, codename__startswith="view_").exclude(codename__in=WITHHELD_VIEWS)
    for role, scopes in PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=group_name(role))
        codenames = [code for scope in scopes for code in SCOPE_PERMISSIONS.get(scope, [])]
        granted = list(views) + list(Permission.objects.filter(content_type__app_label__in=APPS, codename__in=codenames))
        group.permissions.set(granted)
