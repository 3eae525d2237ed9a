"""Turn control in the admin: cancel, interrupt and resume actions on turns, approve and deny on
approvals; each for the operator's own tenant only, audited, and refused to a viewer."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from django.utils import timezone

from agents.models import Approval, ApprovalStatus, Conversation, Turn, TurnStatus
from budgets.admin_roles import group_name, sync_groups
from budgets.models import AuditEntry, OperatorBinding
from tests.budgets.test_admin import admin_url

pytestmark = pytest.mark.django_db


def operator(name: str, role: str, tenant) -> Client:
    sync_groups()
    user = User.objects.create_user(name, is_staff=True)
    user.groups.add(Group.objects.get(name=group_name(role)))
    OperatorBinding.objects.create(user=user, tenant=tenant)
    client = Client()
    client.force_login(user)
    return client


def queued_turn(actor, status=TurnStatus.QUEUED) -> Turn:
    conversation = Conversation.objects.create(tenant=actor.tenant, agent=actor.agent, last_seq=1)
    return Turn.objects.create(tenant=actor.tenant, conversation=conversation, agent=actor.agent, seq=1, status=status)


@pytest.fixture(autouse=True)
def _no_enqueue(monkeypatch):
    monkeypatch.setattr("agents.control_admin.enqueue_turn", lambda turn_id: None)


def test_an_executor_cancels_and_interrupts_their_tenants_turns_only(alice, bob):
    exe = operator("exe", "executor", alice.tenant)
    mine, theirs = queued_turn(alice), queued_turn(bob)
    exe.post(admin_url(Turn, "changelist"), {"action": "cancel_selected", "_selected_action": [mine.pk, theirs.pk]})
    assert Turn.objects.get(pk=mine.pk).status == TurnStatus.CANCELLED
    assert Turn.objects.get(pk=theirs.pk).status == TurnStatus.QUEUED, "another tenant's turn is out of reach"
    assert AuditEntry.objects.filter(action="turn.cancelled", target=str(mine.pk), actor__startswith="user:").exists()
    other = queued_turn(alice)
    exe.post(admin_url(Turn, "changelist"), {"action": "interrupt_selected", "_selected_action": [other.pk]})
    assert Turn.objects.get(pk=other.pk).status == TurnStatus.INTERRUPTED
    exe.post(admin_url(Turn, "changelist"), {"action": "resume_selected", "_selected_action": [other.pk]})
    assert Turn.objects.get(pk=other.pk).status == TurnStatus.QUEUED


def test_a_viewer_has_no_control_actions(alice):
    val = operator("val", "viewer", alice.tenant)
    turn = queued_turn(alice)
    page = val.get(admin_url(Turn, "changelist"))
    assert b"cancel_selected" not in page.content
    val.post(admin_url(Turn, "changelist"), {"action": "cancel_selected", "_selected_action": [turn.pk]})
    assert Turn.objects.get(pk=turn.pk).status == TurnStatus.QUEUED


def test_an_executor_approves_a_held_tool_call(alice, bob):
    exe = operator("exe", "executor", alice.tenant)
    call = {"id": "c1", "type": "function", "function": {"name": "rm", "arguments": "{}"}}
    expires = timezone.now() + timedelta(hours=1)
    approvals = []
    for actor in (alice, bob):
        turn = queued_turn(actor, status=TurnStatus.AWAITING_APPROVAL)
        approvals.append(Approval.objects.create(tenant=actor.tenant, turn=turn, tool_calls=[call], expires_at=expires))
    exe.post(admin_url(Approval, "changelist"), {"action": "approve_selected", "_selected_action": [a.pk for a in approvals]})
    mine, theirs = (Approval.objects.get(pk=a.pk) for a in approvals)
    assert mine.status == ApprovalStatus.APPROVED and mine.decided_by.startswith("user:")
    assert theirs.status == ApprovalStatus.PENDING
    turn = Turn.objects.select_related("output").get(pk=mine.turn_id)
    assert turn.status == TurnStatus.SUCCEEDED and turn.output.tool_calls == [call]
