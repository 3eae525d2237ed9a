"""Model groups for the routing tests: deployments on stub model servers."""

from __future__ import annotations

import time

from django.conf import settings

from agents import breaker
from routing import selection
from routing.groups import DeploymentSpec
from routing.models import Deployment, ModelGroup
from sentinel_site.redis import sync_client


def group(tenant, name: str, *deployments: dict, **options) -> ModelGroup:
    made = ModelGroup.objects.create(tenant=tenant, name=name, **options)
    for index, values in enumerate(deployments):
        Deployment.objects.create(group=made, **{"name": f"d{index}", "provider_model": f"{name}-model", **values})
    return made


def cooldown_passes(actor) -> None:
    """The cooldown of `trio`'s failing deployment d0 passes: its breaker's opening moved back in
    Redis (the state every worker reads), as waiting out SENTINEL_BREAKER_OPEN_SECONDS would."""
    failing = Deployment.objects.get(group__name="trio", name="d0")
    spec = DeploymentSpec(failing.id, failing.name, failing.base_url, "", failing.provider_model, 1, None, None)
    key = breaker._key(selection.breaker_key(spec, actor.tenant.id))
    opened = float(sync_client().hget(key, "opened_at") or 0)
    assert opened, "the failing deployment's breaker is open"
    sync_client().hset(key, "opened_at", opened - settings.SENTINEL["BREAKER_OPEN_SECONDS"] - 1)
    time.sleep(0.2)  # the worker's routing snapshot (SENTINEL_ROUTING_STATE_SECONDS) ages out
