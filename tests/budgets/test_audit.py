"""The audit log: a keyed hash chain anchored by signed checkpoints; tampering is reported at the right sequence number."""

import hashlib
import hmac
import itertools
import json
import logging
import os
import subprocess
import sys
import threading
import uuid
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import Client

from budgets import audit, tasks
from budgets.models import AuditCheckpoint, AuditEntry, AuditHead, Tenant
from sentinel_site import logs

pytestmark = pytest.mark.django_db

BASE_DIR = Path(__file__).resolve().parent.parent.parent
KEYED_MIGRATION = ("budgets", "0005_audit_keyed_chain")


@pytest.fixture(autouse=True)
def checkpoint_file(settings, tmp_path) -> Path:
    """Checkpoints go to a file of this test's own, never into the data directory."""
    path = tmp_path / "audit-checkpoints.jsonl"
    settings.SENTINEL = {**settings.SENTINEL, "AUDIT_CHECKPOINT_FILE": str(path)}
    return path


def fill(n=10):
    AuditEntry.objects.all().delete()
    AuditHead.objects.all().delete()
    AuditCheckpoint.objects.all().delete()
    for i in range(n):
        audit.record("test.event", actor="tester", target=f"t{i}", data={"i": i})


def rehash_from(seq, hasher):
    """What a database user does to hide an edit: re-hash every entry from `seq` on, and the head."""
    prev = AuditEntry.objects.get(seq=seq - 1).hash if seq > 1 else audit.GENESIS
    for entry in AuditEntry.objects.filter(seq__gte=seq).order_by("seq"):
        entry.prev_hash, entry.hash = prev, hasher(prev, audit.canonical(entry))
        entry.save(update_fields=["prev_hash", "hash"])
        prev = entry.hash
    AuditHead.objects.filter(id=1).update(hash=prev)


def verify_command(*checkpoint_files):
    args = [f"--checkpoint={path}" for path in checkpoint_files]
    out = StringIO()
    try:
        call_command("verify_audit", *args, stdout=out)
        return None
    except CommandError as error:
        return str(error)


def lines(path):
    return path.read_text().splitlines()


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
    from budgets import keys
    from budgets.models import ApiKey, Tenant

    out = StringIO()
    with caplog.at_level("DEBUG"):
        call_command("create_api_key", "--tenant", "secretive", stdout=out, stderr=StringIO())
    key = out.getvalue().strip().splitlines()[-1]
    secret = keys.parse(key)[1]  # not rsplit("_"): the secret itself may hold underscores
    with connection.cursor() as cursor:
        for table in ("budgets_apikey", "budgets_auditentry"):
            cursor.execute(f"SELECT * FROM {table}")
            assert not any(secret in str(row) for row in cursor.fetchall()), f"the secret leaked into {table}"
    assert secret not in caplog.text
    assert AuditEntry.objects.filter(action="key.created", tenant_id=Tenant.objects.get(name="secretive").id).exists()
    assert ApiKey.objects.get(tenant__name="secretive").hashed_secret != secret


# --- the key ---------------------------------------------------------------------------------------
def test_each_hash_is_an_hmac_sha256_under_the_audit_key():
    fill(3)
    key = django_settings.SENTINEL["AUDIT_KEY"].encode()
    for entry in AuditEntry.objects.order_by("seq"):
        expected = hmac.new(key, (entry.prev_hash + audit.canonical(entry)).encode(), hashlib.sha256).hexdigest()
        assert entry.hash == expected


def test_a_chain_written_under_another_key_does_not_verify(settings):
    fill(3)
    settings.SENTINEL = {**settings.SENTINEL, "AUDIT_KEY": "another-key-of-at-least-thirty-two-characters"}
    assert audit.verify() == 1
    assert "SENTINEL_AUDIT_KEY is not the key" in verify_command()


def test_an_edit_re_hashed_without_the_key_is_reported():
    fill()
    AuditEntry.objects.filter(seq=4).update(data={"i": 999})
    rehash_from(4, audit.legacy_sha256)  # a consistent chain, as plain SHA-256 used to accept
    assert audit.verify() == 4
    assert "sequence number 4 (altered" in verify_command()


def test_deleting_a_tenant_leaves_the_chain_intact():
    fill(0)
    tenant = Tenant.objects.create(name="leaving")
    tenant_id = tenant.id
    audit.record("key.created", actor="tester", tenant_id=tenant_id, target="k1")
    audit.record("test.event", actor="tester")
    tenant.delete()
    assert audit.verify() is None
    assert AuditEntry.objects.filter(tenant_id=tenant_id).count() == 2  # tenant.created and key.created, id kept


def test_an_append_takes_three_statements_under_the_head_lock(django_assert_num_queries):
    fill(1)
    with django_assert_num_queries(3):  # lock the head, insert the entry, move the head: no more round trips
        audit.record("test.event", actor="tester")


def test_many_entries_append_under_one_lock_of_the_head_and_continue_the_chain(django_assert_num_queries):
    fill(2)
    tenant_id = uuid.uuid4()
    batch = [{"action": "turn.succeeded", "actor": "key:1", "tenant_id": tenant_id, "target": f"t{n}", "data": {"n": n}} for n in range(5)]
    with django_assert_num_queries(2):  # whatever the count: lock the head; insert them all and move the head
        written = audit.record_many(batch)
    assert [entry.seq for entry in written] == [3, 4, 5, 6, 7]
    assert AuditHead.objects.get(id=1).seq == 7 and audit.verify() is None
    assert AuditEntry.objects.get(seq=5).data == {"n": 2} and AuditEntry.objects.get(seq=5).tenant_id == tenant_id
    audit.record("after.the.batch", actor="tester")
    assert audit.verify() is None


@pytest.mark.parametrize(
    "key,message",
    [
        ("", "SENTINEL_AUDIT_KEY (or SENTINEL_AUDIT_KEY_FILE) must be set when SENTINEL_ENV=production"),
        ("short", "SENTINEL_AUDIT_KEY must be at least 32 characters"),
        ("sentinel-development-audit-key-not-for-production", "SENTINEL_AUDIT_KEY must be its own secret in production"),
    ],
)
def test_production_refuses_to_start_without_a_real_audit_key(key, message):
    env = {**os.environ, "SENTINEL_ENV": "production", "SENTINEL_SECRET_KEY": "s3cret-" * 8, "SENTINEL_ALLOWED_HOSTS": "x"}
    env["SENTINEL_AUDIT_KEY"] = key
    env.pop("SENTINEL_AUDIT_KEY_FILE", None)
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=BASE_DIR, env=env, capture_output=True, text=True)
    assert result.returncode != 0 and message in result.stderr, result.stderr[-2000:]


def test_the_admin_lists_audit_entries_by_tenant_without_a_foreign_key(alice, bob):
    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw-for-tests-only"))
    page = client.get("/admin/budgets/auditentry/", {"tenant": str(alice.tenant.id)})
    assert page.status_code == 200
    shown = page.context["cl"].result_list
    assert {entry.tenant_id for entry in shown} == {alice.tenant.id} and {entry.tenant_name for entry in shown} == {"alice"}


# --- checkpoints -----------------------------------------------------------------------------------
def test_a_checkpoint_signs_the_head_into_the_file_and_a_log_line(checkpoint_file, caplog):
    fill(3)
    with caplog.at_level(logging.INFO, logger="budgets.audit"):
        assert tasks.checkpoint_audit() == 3
    [line] = lines(checkpoint_file)
    written = json.loads(line)
    head = AuditHead.objects.get(id=1)
    assert written["type"] == audit.CHECKPOINT_TYPE and (written["seq"], written["hash"]) == (3, head.hash)
    message = json.dumps({"at": written["at"], "hash": written["hash"], "seq": 3}, sort_keys=True, separators=(",", ":"))
    key = django_settings.SENTINEL["AUDIT_KEY"].encode()
    assert written["sig"] == hmac.new(key, f"{audit.CHECKPOINT_TYPE}\n{message}".encode(), hashlib.sha256).hexdigest()
    [logged] = [r for r in caplog.records if hasattr(r, "audit_checkpoint")]
    assert logged.audit_checkpoint == written and line in logged.getMessage()


def test_no_checkpoint_is_written_while_the_head_stands_still(checkpoint_file):
    fill(3)
    assert audit.checkpoint().seq == 3
    assert audit.checkpoint() is None
    audit.record("test.event", actor="tester")
    assert audit.checkpoint().seq == 4
    assert [json.loads(line)["seq"] for line in lines(checkpoint_file)] == [3, 4]


def test_an_empty_chain_has_nothing_to_checkpoint(checkpoint_file):
    fill(0)
    assert audit.checkpoint() is None and not checkpoint_file.exists()


@pytest.mark.django_db(transaction=True)
def test_two_checkpoint_runs_at_once_write_the_head_once(checkpoint_file, monkeypatch):
    fill(3)
    both_read = threading.Barrier(2, timeout=30)
    claim = audit._claim

    def claim_once_both_have_read(last, point):
        both_read.wait()  # each run has read the same last checkpoint: a naive writer would write twice
        return claim(last, point)

    monkeypatch.setattr(audit, "_claim", claim_once_both_have_read)
    results = []

    def run():
        try:
            results.append(audit.checkpoint())
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r is None for r in results) == [False, True]
    assert len(lines(checkpoint_file)) == 1


def test_a_checkpoint_that_could_not_be_written_is_written_next_time(settings, checkpoint_file, tmp_path):
    fill(3)
    settings.SENTINEL = {**settings.SENTINEL, "AUDIT_CHECKPOINT_FILE": str(tmp_path)}  # a directory: cannot append
    with pytest.raises(OSError):
        audit.checkpoint()
    settings.SENTINEL = {**settings.SENTINEL, "AUDIT_CHECKPOINT_FILE": str(checkpoint_file)}
    assert audit.checkpoint().seq == 3 and len(lines(checkpoint_file)) == 1


def test_a_checkpoint_can_go_to_the_log_only(settings, caplog):
    fill(2)
    settings.SENTINEL = {**settings.SENTINEL, "AUDIT_CHECKPOINT_FILE": ""}
    with caplog.at_level(logging.INFO, logger="budgets.audit"):
        assert audit.checkpoint().seq == 2
    assert any(getattr(r, "audit_checkpoint", {}).get("seq") == 2 for r in caplog.records)


def test_a_checkpoint_run_raises_an_alarm_when_the_chain_lost_the_last_checkpoint(caplog):
    fill(5)
    audit.checkpoint()
    AuditEntry.objects.filter(seq__gte=4).delete()
    AuditHead.objects.filter(id=1).update(seq=3, hash=AuditEntry.objects.get(seq=3).hash)
    audit.record("test.after", actor="tester")
    with caplog.at_level(logging.ERROR, logger="budgets.audit"):
        audit.checkpoint()
    assert "no longer holds the last checkpoint (seq 5)" in caplog.text


def test_the_checkpoint_runs_on_beat_and_expires_within_its_period():
    entry = django_settings.CELERY_BEAT_SCHEDULE["audit-checkpoint"]
    assert entry["task"] == tasks.checkpoint_audit.name
    assert entry["options"]["expires"] < entry["schedule"]


# --- verify_audit --checkpoint ---------------------------------------------------------------------
def test_an_intact_chain_matches_its_checkpoints(checkpoint_file):
    fill(4)
    audit.checkpoint()
    audit.record("test.event", actor="tester")
    audit.checkpoint()
    out = StringIO()
    call_command("verify_audit", f"--checkpoint={checkpoint_file}", stdout=out)
    assert "audit log intact: 5 entries; 2 signed checkpoints match (newest: sequence number 5" in out.getvalue()


def test_a_chain_cut_back_with_its_head_is_caught_by_its_checkpoint(checkpoint_file):
    fill(10)
    audit.checkpoint()
    AuditEntry.objects.filter(seq__gte=8).delete()
    AuditHead.objects.filter(id=1).update(seq=7, hash=AuditEntry.objects.get(seq=7).hash)
    assert audit.verify() is None  # the database alone cannot tell
    assert "sequence number 8 (truncated: the chain ends at 7, but the signed checkpoint" in verify_command(checkpoint_file)


def test_a_wiped_log_is_caught_by_its_checkpoint(checkpoint_file):
    fill(5)
    audit.checkpoint()
    AuditEntry.objects.all().delete()
    AuditHead.objects.all().delete()
    assert verify_command() is None  # "intact: 0 entries"
    assert "sequence number 1 (wiped: the chain is empty, but the signed checkpoint" in verify_command(checkpoint_file)


@pytest.mark.parametrize(
    "hasher,found",
    [
        ("key", "sequence number 10 (rewritten: its hash differs from the signed checkpoint"),  # someone holding the key
        ("sha256", "sequence number 4 (altered"),  # a database user without it
    ],
)
def test_a_rewritten_chain_is_caught_by_its_checkpoint(checkpoint_file, hasher, found):
    fill(10)
    audit.checkpoint()
    AuditEntry.objects.filter(seq=4).update(data={"i": 999})
    rehash_from(4, audit.keyed(django_settings.SENTINEL["AUDIT_KEY"]) if hasher == "key" else audit.legacy_sha256)
    assert found in verify_command(checkpoint_file)


def test_a_forged_checkpoint_line_is_reported_and_not_trusted(checkpoint_file, settings):
    fill(5)
    audit.checkpoint()
    deployment_key = settings.SENTINEL["AUDIT_KEY"]
    settings.SENTINEL = {**settings.SENTINEL, "AUDIT_KEY": "an-attackers-own-key-of-32-characters-or-more"}
    forged = audit.Checkpoint.sign(99, "f" * 64)  # signed, but not with the deployment's key
    with checkpoint_file.open("a") as out:
        out.write(forged.line() + "\n")
        out.write(json.dumps({**forged.fields(), "seq": "99"}) + "\n")
    settings.SENTINEL = {**settings.SENTINEL, "AUDIT_KEY": deployment_key}
    problem = verify_command(checkpoint_file)
    assert f"{checkpoint_file}:2: a checkpoint with a bad signature" in problem
    assert f"{checkpoint_file}:3: a malformed checkpoint" in problem
    assert "truncated" not in problem  # seq 99 was not believed


def test_checkpoints_are_read_from_a_shipped_log_in_either_format(checkpoint_file, caplog, tmp_path):
    fill(3)
    with caplog.at_level(logging.INFO, logger="budgets.audit"):
        audit.checkpoint()
    [record] = [r for r in caplog.records if hasattr(r, "audit_checkpoint")]
    logs.ContextFilter().filter(record)
    text = logging.Formatter(django_settings.LOGGING["formatters"]["text"]["format"]).format(record)
    shipped = tmp_path / "shipped.log"
    shipped.write_text("\n".join(["an unrelated line {}", logs.JsonFormatter().format(record), text]) + "\n")
    anchors = audit.read_checkpoints(lines(shipped))
    assert list(anchors.by_seq) == [3] and anchors.ignored == 1 and not anchors.problems
    AuditEntry.objects.filter(seq=3).delete()
    AuditHead.objects.filter(id=1).update(seq=2, hash=AuditEntry.objects.get(seq=2).hash)
    assert "sequence number 3 (truncated" in verify_command(shipped)


def test_a_checkpoint_file_that_is_missing_or_empty_is_an_error(checkpoint_file):
    fill(2)
    assert "cannot read the checkpoint file" in verify_command(checkpoint_file)
    checkpoint_file.write_text("")
    assert "no checkpoint in" in verify_command(checkpoint_file)


# --- upgrading from the SHA-256 chain --------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_the_upgrade_re_hashes_a_sha256_chain_under_the_key():
    executor = MigrationExecutor(connection)
    legacy = executor.loader.get_migration(*KEYED_MIGRATION).dependencies
    try:
        executor.migrate(legacy)
        old = executor.loader.project_state(legacy).apps
        old_entry, old_head = old.get_model("budgets", "AuditEntry"), old.get_model("budgets", "AuditHead")
        tenant_id, prev = uuid.uuid4(), audit.GENESIS
        for i in range(4):
            entry = audit._entry(
                old_entry, audit.legacy_sha256, seq=i + 1, prev_hash=prev, action="test.old", actor="t", tenant_id=tenant_id
            )
            entry.save(force_insert=True)
            prev = entry.hash
        old_head.objects.create(id=1, seq=4, hash=prev)
        legacy_hashes = list(old_entry.objects.order_by("seq").values_list("hash", flat=True))

        MigrationExecutor(connection).migrate([KEYED_MIGRATION, ("budgets", "0006_auditbase")])  # the chain's purge start, read by verify
        assert audit.verify() is None
        entries = list(AuditEntry.objects.order_by("seq"))
        assert [e.tenant_id for e in entries[:4]] == [tenant_id] * 4
        assert not {e.hash for e in entries} & set(legacy_hashes)
        assert entries[-1].action == "audit.rekeyed" and entries[-1].data["entries"] == 4 and entries[-1].data["legacy_intact"]

        MigrationExecutor(connection).migrate(legacy)  # and back: the SHA-256 chain as it was
        assert list(old_entry.objects.filter(seq__lte=4).order_by("seq").values_list("hash", flat=True)) == legacy_hashes
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())


def test_re_chaining_records_where_the_old_chain_was_already_broken():
    fill(0)
    prev = audit.GENESIS
    for i in range(5):
        entry = audit._entry(AuditEntry, audit.legacy_sha256, seq=i + 1, prev_hash=prev, action="test.old", actor="t", data={"i": i})
        entry.save(force_insert=True)
        prev = entry.hash
    AuditHead.objects.create(id=1, seq=5, hash=prev)
    AuditEntry.objects.filter(seq=3).update(tenant_id=None, data={"i": -1})  # e.g. what deleting a tenant used to do
    hasher = audit.keyed(django_settings.SENTINEL["AUDIT_KEY"])
    entries, first_bad = audit.rechain(AuditEntry, AuditHead, old=audit.legacy_sha256, new=hasher)
    audit.note_rekeyed(AuditEntry, AuditHead, hasher, entries=entries, first_bad=first_bad)
    assert (entries, first_bad) == (5, 3)
    note = AuditEntry.objects.get(seq=6)
    assert note.action == "audit.rekeyed" and note.data["legacy_first_bad"] == 3 and not note.data["legacy_intact"]
    assert audit.verify() is None  # keyed from here on; the damage before is on record, in the chain


def test_re_chaining_a_wiped_legacy_log_keeps_the_evidence():
    fill(0)
    AuditHead.objects.create(id=1, seq=7, hash="a" * 64)  # entries gone, the head remembers 7
    hasher = audit.keyed(django_settings.SENTINEL["AUDIT_KEY"])
    assert audit.rechain(AuditEntry, AuditHead, old=audit.legacy_sha256, new=hasher) == (0, 1)
