"""A turn that ends wakes the run its idempotency key names, and only a run of the turn's own tenant:
a client may put any key on its request, another tenant's run id included."""

from unittest import mock

import pytest
from django.test import Client

from agents.models import Turn
from runs import signals
from tests.runs.conftest import make_agents

pytestmark = pytest.mark.django_db


def a_run_of(actor) -> str:
    make_agents(actor.tenant, ["a"])
    response = Client().post(
        "/v1/runs", {"pattern": "parallel", "agents": ["a"], "input": "hi"}, content_type="application/json", **actor.auth
    )
    assert response.status_code == 202, response.content
    return response.json()["id"]


def ended(tenant_id, key: str) -> None:
    signals.on_turn_ended(sender=Turn, turn_id=None, status="succeeded", idempotency_key=key, tenant_id=tenant_id)


def test_a_step_turn_wakes_its_own_tenants_run(alice):
    run_id = a_run_of(alice)
    with mock.patch.object(signals, "enqueue_dispatch", autospec=True) as enqueue:
        ended(alice.tenant.id, f"run:{run_id}:a:1")
    enqueue.assert_called_once()
    assert str(enqueue.call_args.args[0]) == run_id


def test_a_key_naming_another_tenants_run_wakes_nothing(alice, bob):
    run_id = a_run_of(bob)
    with mock.patch.object(signals, "enqueue_dispatch", autospec=True) as enqueue:
        ended(alice.tenant.id, f"run:{run_id}:a:1")
        ended(alice.tenant.id, "run:not-a-uuid:a:1")
        ended(alice.tenant.id, "my-own-key")
    enqueue.assert_not_called()
