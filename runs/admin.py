"""The runs admin: runs with their steps (outputs, costs, turns) and events, read-only and
tenant-scoped (sentinel_site/admin.py); a re-run action submits a run again as it was asked."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from runs import plans
from runs.models import Run, RunEvent, Step, Workflow
from runs.submission import submit
from sentinel_site.admin import BigTableMixin, ReadOnlyAdmin, ReadOnlyInline, TenantFilter


class StepInline(ReadOnlyInline):
    model = Step
    fields = ("key", "kind", "agent", "state", "attempt", "turn", "output", "cost", "prompt_tokens", "completion_tokens", "finished_at")
    readonly_fields = fields
    show_change_link = True


class RunEventInline(ReadOnlyInline):
    model = RunEvent
    fields = ("id", "kind", "step", "payload", "created_at")
    readonly_fields = fields


@admin.register(Run)
class RunAdmin(BigTableMixin, ReadOnlyAdmin):
    list_display = ("id", "tenant", "pattern", "status", "cost", "max_cost", "created_at", "finished_at")
    list_filter = (TenantFilter, "pattern", "status")
    list_select_related = ("tenant",)
    search_fields = ("=id",)
    date_hierarchy = "created_at"
    inlines = (StepInline, RunEventInline)
    actions = ("rerun",)
    readonly_fields = [field.name for field in Run._meta.fields]

    @admin.action(description="Run again (a new run with the same request)", permissions=["rerun"])
    def rerun(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        started = 0
        for run in queryset.select_related("tenant", "api_key"):
            try:
                submit(tenant=run.tenant, api_key=run.api_key, data=run.request, idempotency_key=None)
            except plans.PlanError as error:
                self.message_user(request, f"Run {run.id} cannot run again: {error}", messages.ERROR)
                continue
            started += 1
        self.message_user(request, f"{started} run(s) started again.")

    def has_rerun_permission(self, request: HttpRequest) -> bool:
        # change_run stands for turns:execute (budgets/admin_roles.py): the table itself stays read-only.
        return request.user.has_perm("runs.change_run")


@admin.register(Step)
class StepAdmin(BigTableMixin, ReadOnlyAdmin):
    list_display = ("key", "run", "tenant", "kind", "agent", "state", "attempt", "cost", "finished_at")
    list_filter = (TenantFilter, "kind", "state")
    list_select_related = ("tenant", "agent", "run")
    search_fields = ("=run__id", "key")
    raw_id_fields = ("run", "turn", "agent")
    readonly_fields = [field.name for field in Step._meta.fields]


@admin.register(Workflow)
class WorkflowAdmin(ReadOnlyAdmin):
    """Declared in config files (`manage.py config apply`, SENTINEL_CONFIG_FILE): the file is the source, so read-only here."""

    list_display = ("name", "tenant", "source", "updated_at")
    list_filter = (TenantFilter,)
    list_select_related = ("tenant",)
    search_fields = ("name",)
    readonly_fields = ("tenant", "name", "definition", "source", "created_at", "updated_at")
