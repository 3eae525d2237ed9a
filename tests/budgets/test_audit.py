"""The audit log: hash-chained; tampering is reported at the right sequence number; writers never fork it."""

import itertools
import threading
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from budgets import audit
from budgets.models import AuditEntry, AuditHead

pytestmark = pytest.mark.django_db


def fill(n=10):
    AuditEntry.objects.all().delete()
    AuditHead.objects.all().delete()
    for i in range(n):
        audit.record("test.event", actor="tester", target=f"t{i}", data={"i": i})


def verify_command():
    try:
        call_command("verify_audit", stdout=StringIO())
        return None
    except CommandError as error:
        return str(error)


def test_an_intact_chain_verifies():
    fill()
    assert audit.verify() is None and verify_command() is None
    entries = list(AuditEntry.objects.order_by("seq"))
    assert [e.seq for e in entries] == list(range(1, 11))
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(entries))


def test_an_edited_entry_is_reported_at_its_sequence_number():
    fill()
    AuditEntry.objects.filter(seq=4).update(data={"i": 999})
    assert audit.verify() == 4
    assert "sequence number 4" in verify_command()


def test_a_deleted_entry_is_reported():
    fill()
    AuditEntry.objects.filter(seq=6).delete()
    assert audit.verify() == 6


def test_reordered_entries_are_reported():
    fill()
    AuditEntry.objects.filter(seq=3).update(seq=-1)
    AuditEntry.objects.filter(seq=7).update(seq=3)
    AuditEntry.objects.filter(seq=-1).update(seq=7)
    assert audit.verify() == 3


def test_a_truncated_then_appended_log_is_reported():
    fill()
    AuditEntry.objects.filter(seq__gte=8).delete()
    assert audit.verify() == 8  # the head still remembers entry 10
    audit.record("test.after", actor="tester")
    assert audit.verify() == 8


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_cannot_fork_the_chain():
    fill(1)

    def write(n):
        try:
            for i in range(10):
                audit.record("test.concurrent", actor=f"writer{n}", data={"i": i})
        finally:
            connection.close()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert AuditEntry.objects.count() == 61 and audit.verify() is None


def test_no_plaintext_key_reaches_the_database_or_the_audit_log(caplog):
    from budgets.models import ApiKey, Tenant

    out = StringIO()
    with caplog.at_level("DEBUG"):
        call_command("create_api_key", "--tenant", "secretive", stdout=out, stderr=StringIO())
    key = out.getvalue().strip().splitlines()[-1]
    secret = key.rsplit("_", 1)[1]
    with connection.cursor() as cursor:
        for table in ("budgets_apikey", "budgets_auditentry"):
            cursor.execute(f"SELECT * FROM {table}")
            assert not any(secret in str(row) for row in cursor.fetchall()), f"the secret leaked into {table}"
    assert secret not in caplog.text
    assert AuditEntry.objects.filter(action="key.created", tenant=Tenant.objects.get(name="secretive")).exists()
    assert ApiKey.objects.get(tenant__name="secretive").hashed_secret != secret
