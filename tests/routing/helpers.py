"""Model groups for the routing tests: deployments on stub model servers."""

from __future__ import annotations

from routing.models import Deployment, ModelGroup


def group(tenant, name: str, *deployments: dict, **options) -> ModelGroup:
    made = ModelGroup.objects.create(tenant=tenant, name=name, **options)
    for index, values in enumerate(deployments):
        Deployment.objects.create(group=made, **{"name": f"d{index}", "provider_model": f"{name}-model", **values})
    return made
