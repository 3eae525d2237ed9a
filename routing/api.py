"""/v1/model-groups: the caller's tenant's model groups and their deployments. Another tenant's
group is a 404; global groups (no tenant) are the operator's, managed in the admin only."""

from __future__ import annotations

from django.db import transaction
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import viewsets

from agents.api.resources import TenantScoped
from budgets import audit, roles
from routing.models import ModelGroup
from routing.serializers import ModelGroupSerializer

TAG = ["model-groups"]
NAME_TAKEN = {
    409: OpenApiResponse(OpenApiTypes.OBJECT, description="Another model group of yours has this name (`model_group_name_taken`).")
}


@extend_schema_view(
    list=extend_schema(summary="List model groups", tags=TAG),
    retrieve=extend_schema(summary="Read a model group", tags=TAG),
    create=extend_schema(
        summary="Create a model group",
        description="An agent whose `model` is its name is routed through it.",
        responses={201: ModelGroupSerializer, **NAME_TAKEN},
        tags=TAG,
    ),
    update=extend_schema(summary="Replace a model group", responses={200: ModelGroupSerializer, **NAME_TAKEN}, tags=TAG),
    partial_update=extend_schema(summary="Update a model group", responses={200: ModelGroupSerializer, **NAME_TAKEN}, tags=TAG),
    destroy=extend_schema(summary="Delete a model group", description="Agents naming it call their model directly again.", tags=TAG),
)
class ModelGroupViewSet(TenantScoped, viewsets.ModelViewSet):
    model = ModelGroup
    serializer_class = ModelGroupSerializer
    pagination_class = None
    lookup_value_regex = r"[0-9]+"
    required_scopes = {
        "GET": roles.AGENTS_READ,
        "POST": roles.AGENTS_WRITE,
        "PUT": roles.AGENTS_WRITE,
        "PATCH": roles.AGENTS_WRITE,
        "DELETE": roles.AGENTS_WRITE,
    }

    def get_queryset(self):
        return super().get_queryset().prefetch_related("deployments")

    def get_serializer_context(self):
        return {**super().get_serializer_context(), "tenant": self.request.user.tenant}

    def perform_create(self, serializer):
        with transaction.atomic():
            group = serializer.save(tenant=self.request.user.tenant)
            self._audit("model_group.created", group, sorted(serializer.validated_data))

    def perform_update(self, serializer):
        with transaction.atomic():
            group = serializer.save()
            self._audit("model_group.updated", group, sorted(serializer.validated_data))

    def perform_destroy(self, group):
        with transaction.atomic():
            group.delete()
            self._audit("model_group.deleted", group, [])

    def _audit(self, action: str, group: ModelGroup, fields: list[str]) -> None:
        """Field names only: never a value, so a deployment key cannot reach the audit log."""
        audit.record(
            action,
            actor=audit.actor_for_key(self.request.user.api_key),
            tenant_id=group.tenant_id,
            target=str(group.pk or ""),
            data={"name": group.name, "fields": fields},
        )
