"""Model groups as the hot path reads them: frozen specs, cached per process (config_cache)."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Q

from routing.models import ModelGroup
from sentinel_site import config_cache


@dataclass(frozen=True)
class DeploymentSpec:
    id: int
    name: str
    base_url: str
    api_key: str
    model: str
    weight: int
    rpm: int | None
    tpm: int | None


@dataclass(frozen=True)
class GroupSpec:
    id: int
    name: str
    tenant_id: object  # None: a global group
    strategy: str
    deployments: tuple[DeploymentSpec, ...]
    fallbacks: tuple[str, ...]
    context_window_fallbacks: tuple[str, ...]
    content_policy_fallbacks: tuple[str, ...]


def find(tenant_id: object, name: str) -> GroupSpec | None:
    """The tenant's group of this name, else the global one, else None (cached, a miss too)."""
    return config_cache.get("model_group", (tenant_id, name), lambda: (_load(tenant_id, name),))[0]


def _load(tenant_id: object, name: str) -> GroupSpec | None:
    candidates = ModelGroup.objects.filter(name=name).filter(Q(tenant_id=tenant_id) | Q(tenant__isnull=True))
    candidates = candidates.prefetch_related("deployments")
    groups = sorted(candidates, key=lambda group: group.tenant_id is None)  # the tenant's own first
    if not groups:
        return None
    group = groups[0]
    deployments = tuple(
        DeploymentSpec(d.id, d.name, d.base_url, d.api_key, d.provider_model, d.weight, d.rpm, d.tpm)
        for d in group.deployments.all()
        if d.enabled
    )
    return GroupSpec(
        id=group.id,
        name=group.name,
        tenant_id=group.tenant_id,
        strategy=group.strategy,
        deployments=deployments,
        fallbacks=tuple(group.fallbacks or ()),
        context_window_fallbacks=tuple(group.context_window_fallbacks or ()),
        content_policy_fallbacks=tuple(group.content_policy_fallbacks or ()),
    )
