"""Model groups in the admin: deployment keys write-only, each operator sees their tenants' groups and
the global ones (read-only unless a superuser), tenant URLs egress-checked."""

import pytest
from django.contrib.auth.models import User
from django.test import Client

from routing.models import Deployment, ModelGroup
from tests.agents.test_control_admin import operator
from tests.routing.helpers import group

pytestmark = pytest.mark.django_db
SECRET = "sk-admin-deployment-secret-42"


@pytest.fixture
def root() -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("root", password=None))
    return client


def change_url(made: ModelGroup) -> str:
    return f"/admin/routing/modelgroup/{made.id}/change/"


def test_the_group_pages_never_render_a_deployment_key(root, alice):
    made = group(alice.tenant, "chat", {"base_url": "http://127.0.0.1:9/v1", "api_key": SECRET})
    for url in (change_url(made), "/admin/routing/modelgroup/", f"/admin/routing/modelgroup/{made.id}/history/"):
        page = root.get(url)
        assert page.status_code == 200, url
        assert SECRET not in page.content.decode(), f"{url} rendered the deployment key"


def test_a_new_key_replaces_the_stored_one_and_a_blank_keeps_it(root, alice):
    made = group(alice.tenant, "chat", {"base_url": "http://127.0.0.1:9/v1", "api_key": SECRET})
    deployment = made.deployments.get()
    form = {
        "tenant": alice.tenant.id,
        "name": "chat",
        "strategy": "weighted",
        "fallbacks": "[]",
        "context_window_fallbacks": "[]",
        "content_policy_fallbacks": "[]",
        "deployments-TOTAL_FORMS": "1",
        "deployments-INITIAL_FORMS": "1",
        "deployments-0-id": deployment.id,
        "deployments-0-group": made.id,
        "deployments-0-name": "d0",
        "deployments-0-base_url": "http://127.0.0.1:9/v1",
        "deployments-0-provider_model": "m",
        "deployments-0-weight": "1",
        "deployments-0-enabled": "on",
    }
    response = root.post(change_url(made), form)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert Deployment.objects.get(id=deployment.id).api_key == SECRET
    root.post(change_url(made), {**form, "deployments-0-new_api_key": "sk-new"})
    assert Deployment.objects.get(id=deployment.id).api_key == "sk-new"
    refused = root.post(change_url(made), {**form, "deployments-0-base_url": "http://10.0.0.1/v1"})
    assert refused.status_code == 200 and "not allowed" in refused.content.decode()
    assert Deployment.objects.get(id=deployment.id).base_url == "http://127.0.0.1:9/v1", "a tenant URL outside the allowlist is refused"


def test_an_operator_sees_only_their_tenants_groups_and_the_global_ones(alice, bob):
    own = group(alice.tenant, "mine", {"base_url": "http://127.0.0.1:9/v1"})
    theirs = group(bob.tenant, "theirs", {"base_url": "http://127.0.0.1:9/v1"})
    shared = group(None, "shared", {"base_url": "http://127.0.0.1:9/v1", "api_key": SECRET})
    dev = operator("dev", "developer", alice.tenant)
    listing = dev.get("/admin/routing/modelgroup/").content.decode()
    assert "mine" in listing and "shared" in listing and "theirs" not in listing
    assert dev.get(change_url(theirs)).status_code == 404
    assert dev.get(change_url(own)).status_code == 200
    page = dev.get(change_url(shared))
    assert page.status_code == 200 and SECRET not in page.content.decode()
    assert 'name="deployments-0-new_api_key"' not in page.content.decode(), "a global group is read-only to a tenant's operator"
