"""Schemathesis against our own OpenAPI document: every operation, fed generated requests (valid and
not) through the live web process, answers without a 5xx and as the document says it will."""

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.conftest import make_actor

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def fuzz_key(db):
    """An admin key of a tenant of its own: every operation is open to it, nobody else is touched."""
    return make_actor("fuzz", role="admin").key


def _our_schema() -> dict:
    """The document /api/schema/ serves, generated the same way."""
    from drf_spectacular.generators import SchemaGenerator
    from drf_spectacular.renderers import OpenApiJsonRenderer

    return json.loads(OpenApiJsonRenderer().render(SchemaGenerator().get_schema(request=None, public=True)))


schema = schemathesis.openapi.from_dict(_our_schema())
# The key is added at call time and a missing or bad key has its own tests (tests/agents/test_chat_errors.py), so
# cases carry no generated Authorization header; nor query parameters the document does not name. Nor NUL: the API
# refuses it in any text, as its description says (PostgreSQL cannot store it), and OpenAPI 3.0 has no way to say so
# of the keys of a free-form object; tests/agents/test_resources.py checks the refusal.
schema.config.generation.update(with_security_parameters=False, allow_extra_parameters=False, allow_x00=False)


# A schema-valid agent may still name a provider URL the egress policy refuses (a host that does not
# resolve, a private address): a 400 by policy, as documented, which no OpenAPI schema can express.
# Likewise a schema-valid run may still be a plan that cannot run (a workflow cycle, a template reading a
# step it does not wait for, a pattern without the agents it needs): a 400 naming the step, as documented.
# So are a batch whose input_file_id names no batch file of the tenant, a file that is not UTF-8 JSONL, a
# response whose input items the model cannot take, a webhook URL the egress policy refuses, and a
# model group whose deployment names a URL it refuses.
POLICY_REFUSALS = {
    ("POST", "/v1/agents"),
    ("PUT", "/v1/agents/{id}"),
    ("PATCH", "/v1/agents/{id}"),
    ("POST", "/v1/runs"),
    ("POST", "/v1/batches"),
    ("POST", "/v1/files"),
    ("POST", "/v1/responses"),
    *(("POST", f"/v1/{prefix}{suffix}") for prefix in ("webhook_endpoints", "webhooks") for suffix in ("", "/{endpoint_id}")),
    *((method, path) for method in ("POST", "PUT", "PATCH") for path in ("/v1/model-groups", "/v1/model-groups/{id}")),
}


@schema.parametrize()
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_every_operation_keeps_its_contract(case, live_stack, fuzz_key):
    excluded = [positive_data_acceptance] if (case.method.upper(), case.path) in POLICY_REFUSALS else []
    case.call_and_validate(
        base_url=live_stack.base_url, headers={"Authorization": f"Bearer {fuzz_key}"}, timeout=30, excluded_checks=excluded
    )
