"""Every path that writes a turn's audit entry and moves its budget windows in one transaction takes
the audit chain's head first and the windows last, the order of the worker's group commit
(agents/finishing.py): a failing turn's release in the other order deadlocked against it under load."""

from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from agents import control, runner
from agents.models import Stop, Turn, TurnStatus
from budgets.models import AuditHead, Budget, BudgetWindow, Price
from tests.agents.test_turn_runner import admit_turn
from tests.stub_llm import Reply

pytestmark = pytest.mark.django_db


@pytest.fixture
def budgeted(alice):
    Price.objects.create(model="stub-model", input_per_mtok=Decimal(1000), output_per_mtok=Decimal(1000))
    assert Budget.objects.filter(tenant=alice.tenant).exists(), "a tenant starts with its default budgets"
    return alice


def first_write(queries, table: str) -> int:
    writes = [i for i, q in enumerate(queries) if table in q["sql"] and q["sql"].lstrip().upper().startswith(("UPDATE", "WITH", "INSERT"))]
    assert writes, f"no write to {table} was captured"
    return writes[0]


def assert_audit_head_before_windows(queries) -> None:
    head, windows = first_write(queries, AuditHead._meta.db_table), first_write(queries, BudgetWindow._meta.db_table)
    assert head < windows, "the budget windows were locked before the audit head: the group commit takes them the other way round"


def test_a_failing_turn_writes_its_audit_entry_before_it_releases_its_hold(budgeted, stub_llm):
    stub_llm.script(Reply(status=400))
    recorder = runner.claim(admit_turn(budgeted).id)
    with CaptureQueriesContext(connection) as captured:
        runner.execute(recorder)
    assert Turn.objects.get(id=recorder.turn.id).status == TurnStatus.FAILED
    assert_audit_head_before_windows(captured.captured_queries)


def test_cancelling_a_queued_turn_writes_its_audit_entry_before_it_releases_its_hold(budgeted):
    turn = admit_turn(budgeted)
    with CaptureQueriesContext(connection) as captured:
        control.request_stop(turn.id, tenant_id=budgeted.tenant.id, kind=Stop.CANCEL, actor="test")
    assert Turn.objects.get(id=turn.id).status == TurnStatus.CANCELLED
    assert_audit_head_before_windows(captured.captured_queries)
