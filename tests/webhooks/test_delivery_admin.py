"""The delivery log in the admin: every attempt on the delivery's page, the endpoint's secret never shown,
and "Deliver again" (for who manages endpoints) makes a delivery due now with a fresh allowance."""

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from django.urls import reverse

from budgets.admin_roles import group_name, sync_groups
from budgets.models import OperatorBinding
from webhooks.models import Delivery, DeliveryAttempt, DeliveryStatus, WebhookEndpoint

pytestmark = pytest.mark.django_db

SECRET = "whsec_c2VjcmV0LWJ5dGVzLXRoYXQtbXVzdC1uZXZlci1zaG93"


@pytest.fixture
def failed(alice) -> Delivery:
    endpoint = WebhookEndpoint.objects.create(
        tenant=alice.tenant, url="https://hooks.example.com/in", event_types=["batch.completed"], secret=SECRET
    )
    delivery = Delivery.objects.create(
        tenant=alice.tenant, endpoint=endpoint, event_id="evt_1", event_type="batch.completed", payload={}, status="failed", attempts=3
    )
    for number, code in enumerate((500, 502, 503), start=1):
        DeliveryAttempt.objects.create(delivery=delivery, number=number, status_code=code)
    return delivery


@pytest.fixture
def root() -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("root"))
    return client


def test_the_delivery_page_lists_every_attempt_and_no_page_shows_the_secret(root, failed):
    page = root.get(reverse("admin:webhooks_delivery_change", args=[failed.id])).content.decode()
    assert all(f">{code}<" in page for code in (500, 502, 503)), "each attempt's status"
    endpoint_page = root.get(reverse("admin:webhooks_webhookendpoint_change", args=[failed.endpoint_id])).content.decode()
    listing = root.get(reverse("admin:webhooks_webhookendpoint_changelist")).content.decode()
    for html in (page, endpoint_page, listing):
        assert SECRET not in html and SECRET[6:] not in html


def test_deliver_again_makes_a_failed_delivery_due_now_with_fresh_attempts(root, failed):
    response = root.post(
        reverse("admin:webhooks_delivery_changelist"), {"action": "redeliver", "_selected_action": [str(failed.id)]}, follow=True
    )
    assert "1 delivery(ies) queued again." in response.content.decode()
    failed.refresh_from_db()
    assert (failed.status, failed.attempts) == (DeliveryStatus.PENDING, 0)
    assert DeliveryAttempt.objects.filter(delivery=failed).count() == 3, "the log of earlier attempts stays"


def test_a_viewer_reads_the_log_but_cannot_deliver_again(alice, failed):
    sync_groups()
    viewer = User.objects.create_user("val", is_staff=True)
    viewer.groups.add(Group.objects.get(name=group_name("viewer")))
    OperatorBinding.objects.create(user=viewer, tenant=alice.tenant)
    client = Client()
    client.force_login(viewer)
    listing = client.get(reverse("admin:webhooks_delivery_changelist"))
    assert listing.status_code == 200 and str(failed.id) in listing.content.decode(), "the viewer sees the log"
    assert 'value="redeliver"' not in listing.content.decode(), "and is not offered the action"
    client.post(reverse("admin:webhooks_delivery_changelist"), {"action": "redeliver", "_selected_action": [str(failed.id)]})
    failed.refresh_from_db()
    assert (failed.status, failed.attempts) == (DeliveryStatus.FAILED, 3)
