"""The batches admin draws each batch's progress from its request counts."""

import pytest
from django.utils import timezone

from batches.models import Batch, BatchStatus

pytestmark = pytest.mark.django_db


def batch(actor, **counts) -> Batch:
    return Batch.objects.create(tenant=actor.tenant, endpoint="/v1/chat/completions", expires_at=timezone.now(), **counts)


def test_the_batch_list_shows_a_bar_of_finished_lines(alice, admin_client):
    batch(alice, status=BatchStatus.IN_PROGRESS, total=10, completed=6, failed=1)
    page = admin_client.get("/admin/batches/batch/").content.decode()
    assert 'role="progressbar"' in page and 'aria-valuenow="7"' in page
    assert "7 of 10 (70%), 1 failed: in_progress" in page
    assert 'width="60.0"' in page and 'width="10.0"' in page, "completed and failed have their own shares"


def test_a_batch_still_validating_shows_an_empty_bar(alice, admin_client):
    validating = batch(alice)
    page = admin_client.get(f"/admin/batches/batch/{validating.id}/change/").content.decode()
    assert "0 of 0 (0%)" in page


def test_an_operator_sees_only_their_tenants_batches(alice, bob):
    from budgets.admin_roles import sync_groups
    from tests.budgets.test_admin import logged_in, staff

    sync_groups()
    batch(alice, total=3, completed=3)
    batch(bob, total=9, completed=1)
    page = logged_in(staff("op", "viewer", alice.tenant)).get("/admin/batches/batch/").content.decode()
    assert "3 of 3 (100%)" in page and "1 of 9" not in page
