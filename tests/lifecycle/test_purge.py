"""Data lifecycle: retention per tenant and per kind, `purge --dry-run`, and an audit chain that still
verifies (against its shipped checkpoints too) after its oldest entries are purged."""

from __future__ import annotations

import re
from datetime import date, timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from agents.models import Conversation, Message, Turn, TurnEventRecord, TurnStatus
from budgets import audit, spend
from budgets.models import AuditBase, AuditEntry, Budget, BudgetWindow, Period, Reservation, SpendEntry
from lifecycle import retention
from lifecycle.models import DataKind, RetentionPolicy
from memory.models import EMBEDDING_DIMENSIONS, Memory

pytestmark = pytest.mark.django_db

OLD = timezone.now() - timedelta(days=200)
DAYS_30 = {"RETAIN_MESSAGES_DAYS": 30, "RETAIN_TURN_EVENTS_DAYS": 30, "RETAIN_SPEND_DAYS": 30, "RETAIN_EMBEDDINGS_DAYS": 30}


@pytest.fixture
def thirty_days(settings):
    settings.SENTINEL = {**settings.SENTINEL, **DAYS_30, "RETAIN_AUDIT_DAYS": 90}


def a_turn(actor, text: str, *, status=TurnStatus.SUCCEEDED, when=None) -> Turn:
    """A finished (or not) turn with its question, reply, two events and an embedding, made `when`."""
    when = when or timezone.now()
    conversation = Conversation.objects.create(tenant=actor.tenant, agent=actor.agent, last_seq=1)
    turn = Turn.objects.create(tenant=actor.tenant, conversation=conversation, agent=actor.agent, seq=1, status=status)
    question = Message.objects.create(tenant=actor.tenant, conversation=conversation, turn=turn, seq=1, index=0, role="user", content=text)
    reply = Message.objects.create(
        tenant=actor.tenant, conversation=conversation, turn=turn, seq=1, index=1, role="assistant", content="ok"
    )
    for seq, kind in enumerate(("queued", "completed")):
        TurnEventRecord.objects.create(turn=turn, seq=seq, kind=kind)
    Memory.objects.create(
        tenant=actor.tenant,
        agent=actor.agent,
        conversation=conversation,
        kind="message",
        message=question,
        text=text,
        embedding=[0.1] * EMBEDDING_DIMENSIONS,
        embedding_model="test",
    )
    for model, rows in ((Turn, [turn.id]), (Message, [question.id, reply.id]), (Memory, [question.memory.id])):
        model.objects.filter(id__in=rows).update(created_at=when)
    TurnEventRecord.objects.filter(turn=turn).update(created_at=when)
    return turn


def spent(actor, cost: str, *, when, window_starts: date) -> SpendEntry:
    """A settled reservation on the tenant's monthly window starting `window_starts`, and its ledger row."""
    budget = Budget.objects.get(tenant=actor.tenant, api_key=None, period=Period.MONTHLY)
    window, _ = BudgetWindow.objects.get_or_create(budget=budget, starts=window_starts)
    BudgetWindow.objects.filter(id=window.id).update(settled=window.settled + Decimal(cost))
    reservation = Reservation.objects.create(
        tenant=actor.tenant, amount=Decimal(cost), status=Reservation.Status.SETTLED, expires_at=when + timedelta(hours=1)
    )
    reservation.windows.add(window)
    entry = SpendEntry.objects.create(tenant=actor.tenant, reservation=reservation, cost=Decimal(cost))
    Reservation.objects.filter(id=reservation.id).update(created_at=when)
    SpendEntry.objects.filter(id=entry.id).update(created_at=when)
    return entry


def audited(count: int, *, when) -> list[int]:
    seqs = [audit.record("test.event", actor="tester", data={"n": i}).seq for i in range(count)]
    # created_at is part of an entry's hashed content: age them by re-chaining under the key, as a
    # chain written back then would be
    entries = list(AuditEntry.objects.filter(seq__in=seqs).order_by("seq"))
    prev = AuditEntry.objects.filter(seq=seqs[0] - 1).values_list("hash", flat=True).first() or audit.GENESIS
    for entry in entries:
        entry.created_at, entry.prev_hash = when, prev
        entry.hash = audit.chain_hash(prev, entry)
        prev = entry.hash
    AuditEntry.objects.bulk_update(entries, ["created_at", "prev_hash", "hash"])
    audit.AuditHead.objects.filter(id=1, seq=seqs[-1]).update(hash=prev)
    return seqs


def dry_run() -> dict[str, int]:
    out = StringIO()
    call_command("purge", "--dry-run", stdout=out)
    return parse(out.getvalue(), "would delete")


def purge(batch: int = 2) -> dict[str, int]:
    out = StringIO()
    call_command("purge", f"--batch={batch}", stdout=out)
    return parse(out.getvalue(), "deleted")


def parse(text: str, verb: str) -> dict[str, int]:
    found = {}
    for rows, table, who in re.findall(rf"^{verb} (\d+) (.+?) \(\w+, (tenant \S+|deployment),", text, flags=re.MULTILINE):
        found[f"{table} {who}"] = int(rows)
    return found


def test_the_purge_deletes_exactly_what_its_dry_run_listed_and_keeps_the_rest(alice, bob, thirty_days):
    old = [a_turn(alice, f"old {i}", when=OLD) for i in range(3)]
    new = a_turn(alice, "new")
    bobs = a_turn(bob, "bob's old", when=OLD)
    listed = dry_run()
    tenant = f"tenant {alice.tenant.id}"
    assert listed[f"messages {tenant}"] == 6 and listed[f"turn events {tenant}"] == 6 and listed[f"memories {tenant}"] == 3
    assert listed[f"messages tenant {bob.tenant.id}"] == 2
    assert Message.objects.filter(turn__in=old).count() == 6, "a dry run deletes nothing"
    assert purge() == listed, "the purge deletes what the dry run listed, table by table"
    assert not Message.objects.filter(turn__in=[*old, bobs]).exists() and not TurnEventRecord.objects.filter(turn__in=old).exists()
    assert Message.objects.filter(turn=new).count() == 2 and TurnEventRecord.objects.filter(turn=new).count() == 2
    assert Memory.objects.filter(tenant=alice.tenant).count() == 1
    assert Turn.objects.filter(id__in=[t.id for t in old]).count() == 3, "the turns stay, with their usage and cost"
    assert dry_run() == {}, "nothing left to go"


def test_a_tenants_own_policy_replaces_the_default(alice, bob, thirty_days):
    RetentionPolicy.objects.create(tenant=bob.tenant, kind=DataKind.MESSAGES, days=0)  # forever
    RetentionPolicy.objects.create(tenant=alice.tenant, kind=DataKind.MESSAGES, days=365)
    a_turn(alice, "200 days old", when=OLD)
    a_turn(bob, "200 days old", when=OLD)
    purge()
    assert Message.objects.filter(tenant=alice.tenant).count() == 2, "alice keeps a year"
    assert Message.objects.filter(tenant=bob.tenant).count() == 2, "bob keeps everything"
    assert not TurnEventRecord.objects.filter(turn__tenant=bob.tenant).exists(), "other kinds follow the default"


def test_nothing_is_purged_by_default_but_the_audit_log_past_90_days(alice):
    a_turn(alice, "old", when=OLD)
    assert {key.split(" tenant")[0].split(" <=")[0] for key in dry_run()} <= {"audit entries"}


def test_an_unfinished_turns_messages_and_events_stay_however_old(alice, thirty_days):
    stuck = a_turn(alice, "still running", status=TurnStatus.RUNNING, when=OLD)
    purge()
    assert Message.objects.filter(turn=stuck).count() == 2 and TurnEventRecord.objects.filter(turn=stuck).count() == 2


def test_the_spend_purge_takes_closed_windows_with_their_ledger_and_budget_counters_still_reconcile(alice, thirty_days):
    long_ago = date.today().replace(day=1) - timedelta(days=150)
    spent(alice, "1.50", when=OLD, window_starts=long_ago.replace(day=1))
    current = spent(alice, "0.25", when=timezone.now(), window_starts=date.today().replace(day=1))
    assert spend.reconcile() == []
    listed = dry_run()
    tenant = f"tenant {alice.tenant.id}"
    assert (listed[f"budget windows {tenant}"], listed[f"spend entries {tenant}"], listed[f"reservations {tenant}"]) == (1, 1, 1)
    purge(batch=1)
    assert spend.reconcile() == [], "no window lost a ledger row it counts"
    assert list(SpendEntry.objects.filter(tenant=alice.tenant)) == [current]


def test_a_reservation_that_still_counts_in_an_open_window_stays(alice, thirty_days):
    entry = spent(alice, "2.00", when=OLD, window_starts=date.today().replace(day=1))  # old, but on this month's window
    purge()
    assert SpendEntry.objects.filter(id=entry.id).exists() and spend.reconcile() == []


# --- the audit log ---------------------------------------------------------------------------------
def test_the_audit_chain_verifies_after_its_old_prefix_is_purged_and_against_its_checkpoints(alice, thirty_days, settings, tmp_path):
    settings.SENTINEL = {**settings.SENTINEL, "AUDIT_CHECKPOINT_FILE": str(tmp_path / "checkpoints.jsonl")}
    AuditEntry.objects.all().delete()
    audit.AuditHead.objects.update_or_create(id=1, defaults={"seq": 0, "hash": audit.GENESIS})
    old = audited(5, when=OLD)
    audit.checkpoint()  # shipped before the purge: it names an entry that will be gone
    recent = audited(3, when=timezone.now())
    audit.checkpoint()
    listed = dry_run()
    assert listed == {f"audit entries <= {old[-1]} deployment": 5}
    assert purge() == listed
    assert list(AuditEntry.objects.order_by("seq").values_list("seq", flat=True))[:3] == recent
    out = StringIO()
    call_command("verify_audit", f"--checkpoint={tmp_path / 'checkpoints.jsonl'}", stdout=out)
    assert "audit log intact" in out.getvalue() and "2 signed checkpoints match" in out.getvalue()
    assert AuditEntry.objects.filter(action="audit.purged", data__through_seq=old[-1]).exists(), "the purge is audited"


def test_a_tenants_longer_audit_policy_holds_the_prefix_back_for_everyone(alice, bob, thirty_days):
    AuditEntry.objects.all().delete()
    audit.AuditHead.objects.update_or_create(id=1, defaults={"seq": 0, "hash": audit.GENESIS})
    RetentionPolicy.objects.create(tenant=bob.tenant, kind=DataKind.AUDIT, days=365)
    first = audited(2, when=OLD)
    audit.record("key.created", actor="tester", tenant_id=bob.tenant.id)
    AuditEntry.objects.filter(action="key.created").update(created_at=OLD)  # bob's 200-day-old entry (re-chained next)
    audited(1, when=OLD)
    assert retention.audit_through() == first[-1], "only the entries before bob's oldest kept one can go"


def test_moving_the_purged_chains_start_is_caught(alice, thirty_days):
    AuditEntry.objects.all().delete()
    audit.AuditHead.objects.update_or_create(id=1, defaults={"seq": 0, "hash": audit.GENESIS})
    old = audited(4, when=OLD)
    audited(2, when=timezone.now())
    purge()
    assert audit.verify() is None
    base = AuditBase.objects.get(id=1)
    AuditBase.objects.filter(id=1).update(seq=base.seq + 1)  # hide the next entry too, without the key
    AuditEntry.objects.filter(seq=old[-1] + 1).delete()
    with pytest.raises(CommandError, match="does not verify"):
        call_command("verify_audit", stdout=StringIO())
    AuditBase.objects.filter(id=1).delete()  # or pretend nothing was ever purged
    with pytest.raises(CommandError, match="missing or out of place"):
        call_command("verify_audit", stdout=StringIO())


def test_a_purge_left_half_done_still_verifies_and_the_next_one_finishes_it(alice, thirty_days, monkeypatch):
    AuditEntry.objects.all().delete()
    audit.AuditHead.objects.update_or_create(id=1, defaults={"seq": 0, "hash": audit.GENESIS})
    old = audited(6, when=OLD)
    audited(1, when=timezone.now())
    audit.purge_prefix(old[-1], batch=2)
    # as if it had died after its first batch: entries at or below the signed start are still there
    AuditEntry.objects.bulk_create([AuditEntry(seq=s, actor="x", action="leftover", prev_hash="0" * 64, hash=f"{s:064x}") for s in old[2:]])
    assert audit.verify() is None, "entries under the signed start are not read"
    assert retention.audit_through() == old[-1]
    purge()
    assert not AuditEntry.objects.filter(seq__lte=old[-1]).exists() and audit.verify() is None


def test_a_checkpoint_after_a_purge_of_the_last_checkpointed_entry_raises_no_false_alarm(alice, thirty_days, settings, tmp_path, caplog):
    settings.SENTINEL = {**settings.SENTINEL, "AUDIT_CHECKPOINT_FILE": str(tmp_path / "checkpoints.jsonl")}
    AuditEntry.objects.all().delete()
    audit.AuditHead.objects.update_or_create(id=1, defaults={"seq": 0, "hash": audit.GENESIS})
    audited(3, when=OLD)
    audit.checkpoint()  # then a quiet chain for longer than its retention: the checkpointed entry goes too
    purge()
    with caplog.at_level("ERROR", logger="budgets.audit"):
        assert audit.checkpoint() is not None  # the purge's own entry moved the head
    assert "no longer holds" not in caplog.text
    assert audit.verify() is None
