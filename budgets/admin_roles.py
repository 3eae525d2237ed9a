"""The API's roles as Django admin groups ("Sentinel viewer", ...), kept in sync after every migrate.

An operator gives a staff user the group of their role; the admin then allows exactly what the role
allows through the API: viewers look, developers manage agents, admins govern keys, budgets and audit.
"""

from __future__ import annotations

from django.contrib.auth.models import Group, Permission

from budgets.roles import AGENTS_WRITE, AUDIT_READ, BUDGETS_ADMIN, KEYS_ADMIN, MEMORY_WRITE, PERMISSIONS

# Which admin model permissions each scope stands for (view_* for every model goes to every role).
SCOPE_PERMISSIONS = {
    AGENTS_WRITE: ["add_agent", "change_agent", "delete_agent"],
    MEMORY_WRITE: ["delete_memory", "delete_message", "change_conversation"],
    BUDGETS_ADMIN: ["add_budget", "change_budget", "delete_budget", "add_price", "change_price", "delete_price"],
    KEYS_ADMIN: ["add_apikey", "change_apikey", "add_tenant", "change_tenant"],
    AUDIT_READ: ["view_auditentry"],
}
APPS = ("agents", "memory", "budgets", "django_celery_beat")


def group_name(role: str) -> str:
    return f"Sentinel {role}"


def sync_groups(**kwargs) -> None:
    views = Permission.objects.filter(content_type__app_label__in=APPS, codename__startswith="view_").exclude(codename="view_auditentry")
    for role, scopes in PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=group_name(role))
        codenames = [code for scope in scopes for code in SCOPE_PERMISSIONS.get(scope, [])]
        granted = list(views) + list(Permission.objects.filter(content_type__app_label__in=APPS, codename__in=codenames))
        group.permissions.set(granted)
