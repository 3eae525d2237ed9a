"""Admin bases every app shares: tenant scoping, read-only tables, and a paginator that never counts millions.

The operator model: a superuser sees and manages every tenant. Any other staff user is an operator
bound to tenants (budgets.OperatorBinding, managed by superusers only) and sees only their rows, in
every admin surface: changelists, change and history pages (another tenant's id is a 404, exactly
like an id that does not exist), search, the tenant filter, foreign-key choices and raw-id labels,
autocomplete, inlines and bulk actions. A staff user bound to no tenant sees nothing. Their role
group (budgets/admin_roles.py) decides what they may do with the rows they see.

Each admin declares how its model reaches a tenant (`tenant_path`: "tenant", "turn__tenant",
"tenant_id", ...); TenantScopedMixin applies it to all of the above.
"""

from __future__ import annotations

import functools
import uuid
from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.admin.widgets import ForeignKeyRawIdWidget
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db import models
from django.db.models import Q, QuerySet
from django.http import Http404, HttpRequest

from budgets.models import OperatorBinding, Tenant

# --- who sees which tenants ------------------------------------------------------------------


def visible_tenant_ids(request: HttpRequest) -> frozenset | None:
    """The ids of the tenants this admin user may see; None means all of them (a superuser).

    Read once per request: a changelist asks for it from its queryset, its filters and its forms.
    """
    cached = getattr(request, "_sentinel_tenant_ids", False)
    if cached is not False:
        return cached
    user = request.user
    if user.is_active and user.is_superuser:
        ids = None
    elif user.is_active and user.is_staff:
        ids = frozenset(OperatorBinding.objects.filter(user_id=user.pk).values_list("tenant_id", flat=True))
    else:
        ids = frozenset()
    request._sentinel_tenant_ids = ids
    return ids


def visible_tenants(request: HttpRequest) -> QuerySet[Tenant]:
    ids = visible_tenant_ids(request)
    return Tenant.objects.all() if ids is None else Tenant.objects.filter(id__in=ids)


def scope_queryset(request: HttpRequest, queryset: QuerySet, tenant_path: str, *, shared_rows: bool = False) -> QuerySet:
    """`queryset` narrowed to the rows whose tenant (reached through `tenant_path`) the user may see.

    `shared_rows`: rows with no tenant at all (global prices) stay visible to every operator.
    """
    ids = visible_tenant_ids(request)
    if ids is None:
        return queryset
    if not ids and not shared_rows:
        return queryset.none()
    condition = Q(**{f"{tenant_path}__in": ids})
    if shared_rows:
        condition |= Q(**{f"{tenant_path}__isnull": True})
    return queryset.filter(condition)


def related_queryset(admin_site: admin.AdminSite, request: HttpRequest, model: type[models.Model], using: str | None = None) -> QuerySet:
    """The rows of `model` a form of this user may point at: what its own admin would list them.

    Models without a tenant-scoped admin are offered to superusers only, unless they carry a tenant
    directly: an unscoped related model must fail closed, not open.
    """
    queryset = model._default_manager.using(using)
    related_admin = admin_site._registry.get(model)
    if related_admin is not None:
        ordering = related_admin.get_ordering(request)
        if ordering:
            queryset = queryset.order_by(*ordering)
    if isinstance(related_admin, TenantScopedMixin):
        return related_admin.scope(request, queryset)
    if visible_tenant_ids(request) is None:
        return queryset
    if any(field.name == "tenant" for field in model._meta.get_fields()):
        return scope_queryset(request, queryset, "tenant")
    return queryset.none()


# --- forms and widgets -----------------------------------------------------------------------


class ScopedRawIdWidget(ForeignKeyRawIdWidget):
    """A raw-id input that names the chosen row only if the user may see it.

    Django's widget labels any id it is given (from the query string of an add page, or a refused
    POST shown again), which would print another tenant's row name next to the input.
    """

    def __init__(self, rel: Any, admin_site: admin.AdminSite, queryset: QuerySet, **kwargs: Any) -> None:
        super().__init__(rel, admin_site, **kwargs)
        self.queryset = queryset

    def label_and_url_for_value(self, value: Any) -> tuple[str, str]:
        key = self.rel.get_related_field().name
        try:
            visible = self.queryset.filter(**{key: value}).exists()
        except (ValueError, ValidationError):
            visible = False
        return super().label_and_url_for_value(value) if visible else ("", "")


class TenantConsistentForm(forms.ModelForm):
    """Refuses a row that points at another tenant's rows (a budget on another tenant's API key).

    Every choice is already limited to the user's tenants; this keeps an operator bound to two
    tenants from joining rows of both.
    """

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        tenant = cleaned.get("tenant")
        tenant_id = tenant.pk if isinstance(tenant, Tenant) else self.instance.__dict__.get("tenant_id")
        if tenant_id is None:
            return cleaned
        for name, value in list(cleaned.items()):
            if name != "tenant" and isinstance(value, models.Model) and getattr(value, "tenant_id", tenant_id) != tenant_id:
                self.add_error(name, "This belongs to another tenant.")
        return cleaned


# --- the bases -------------------------------------------------------------------------------


class TenantScopedMixin:
    """Limits every queryset, choice and lookup of an admin to the tenants its user may see."""

    tenant_path: str = "tenant"  # how a row reaches its tenant, as a queryset lookup
    tenant_shared_rows: bool = False  # rows with no tenant are shared, read-only for operators

    def scope(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return scope_queryset(request, queryset, self.tenant_path, shared_rows=self.tenant_shared_rows)

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return self.scope(request, super().get_queryset(request))

    def get_field_queryset(self, db: str | None, db_field: models.Field, request: HttpRequest) -> QuerySet:
        # Django's version only orders; ours also scopes: every FK and M2M choice goes through here.
        return related_queryset(self.admin_site, request, db_field.remote_field.model, db)

    def formfield_for_foreignkey(self, db_field: models.ForeignKey, request: HttpRequest, **kwargs: Any) -> forms.Field | None:
        queryset = self.get_field_queryset(kwargs.get("using"), db_field, request)
        kwargs.setdefault("queryset", queryset)
        if db_field.name in self.raw_id_fields and "widget" not in kwargs:
            kwargs["widget"] = ScopedRawIdWidget(db_field.remote_field, self.admin_site, kwargs["queryset"], using=kwargs.get("using"))
        if db_field.name == self.tenant_path and visible_tenant_ids(request) is not None:
            kwargs["required"] = True  # only superusers make shared (tenant-less) rows
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def get_readonly_fields(self, request: HttpRequest, obj: models.Model | None = None) -> tuple[str, ...]:
        fields = tuple(super().get_readonly_fields(request, obj))
        # A row's tenant is fixed once it exists: moving it would strand everything that refers to it.
        if obj is not None and self.tenant_path == "tenant" and "tenant" not in fields:
            fields += ("tenant",)
        return fields

    def _is_shared_row(self, request: HttpRequest, obj: models.Model | None) -> bool:
        return (
            self.tenant_shared_rows
            and obj is not None
            and getattr(obj, f"{self.tenant_path}_id", None) is None
            and visible_tenant_ids(request) is not None
        )

    def has_change_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        return not self._is_shared_row(request, obj) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        return not self._is_shared_row(request, obj) and super().has_delete_permission(request, obj)

    def _get_obj_does_not_exist_redirect(self, request: HttpRequest, opts: Any, object_id: str) -> Any:
        # Django redirects to the index with "doesn't exist" (change, delete and history pages);
        # a 404 tells an operator holding another tenant's id exactly as little, and says it plainly.
        raise Http404(f"No {opts.verbose_name} with this id.")


class TenantScopedAdmin(TenantScopedMixin, admin.ModelAdmin):
    """A model admin whose rows belong to tenants."""

    form = TenantConsistentForm


class ReadOnlyAdmin(TenantScopedAdmin):
    """A tenant-scoped table operators look at but never edit here (records, logs, ledgers)."""

    deletable = False  # True: deletable with the model's delete permission (only where the API deletes too)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        return self.deletable and super().has_delete_permission(request, obj)


class ReadOnlyInline(admin.TabularInline):
    """Rows shown under their parent, never edited. The parent's admin scoped the parent already."""

    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        return False


class SuperuserOnlyMixin:
    """For admins that reach past tenants (users, groups, bindings, periodic tasks): superusers only,
    whatever model permissions a group grants."""

    def _superuser(self, request: HttpRequest) -> bool:
        return request.user.is_active and request.user.is_superuser

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self._superuser(request)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._superuser(request)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._superuser(request)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._superuser(request)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._superuser(request)


def lock_to_superusers(site: admin.AdminSite, app_labels: tuple[str, ...]) -> None:
    """Re-register every admin of these apps (registered by their own admin modules) as superuser-only."""
    for model, model_admin in list(site._registry.items()):
        if model._meta.app_label in app_labels and not isinstance(model_admin, SuperuserOnlyMixin):
            locked = type(f"SuperuserOnly{type(model_admin).__name__}", (SuperuserOnlyMixin, type(model_admin)), {})
            site.unregister(model)
            site.register(model, locked)


# --- list filters and pagination -------------------------------------------------------------


class TenantFilter(admin.SimpleListFilter):
    """Filter by tenant, offering only the tenants the user may see (Django's FK filter lists all)."""

    title = "tenant"
    parameter_name = "tenant"

    def __init__(self, request: HttpRequest, params: Any, model: type[models.Model], model_admin: TenantScopedMixin) -> None:
        self.tenant_path = model_admin.tenant_path
        super().__init__(request, params, model, model_admin)

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(str(tenant.pk), tenant.name) for tenant in visible_tenants(request).only("id", "name")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if value is None:
            return queryset
        try:
            tenant_id = uuid.UUID(value)
        except ValueError:
            return queryset.none()  # a tenant id that cannot exist names no rows
        return queryset.filter(**{self.tenant_path: tenant_id})


class CappedPaginator(Paginator):
    """Counts at most CAP rows, so a changelist over millions of rows never runs a full COUNT(*).

    Past the cap the list shows CAP results and its last page is page CAP / per page; filters,
    search and the date filter narrow it. (`show_full_result_count = False` only drops the second,
    unfiltered count: the paginator counts too.)
    """

    CAP = 10_000

    @functools.cached_property
    def count(self) -> int:
        if not isinstance(self.object_list, QuerySet):
            return min(len(self.object_list), self.CAP)
        # Only ids, unordered and limited: PostgreSQL stops after CAP rows, never sorts the table,
        # and computes none of the list's annotations for them.
        return self.object_list.values("pk").order_by()[: self.CAP].count()


class BigTableMixin:
    """For tables that grow with traffic (messages, turn events, memories, audit, ledger)."""

    paginator = CappedPaginator
    show_full_result_count = False
