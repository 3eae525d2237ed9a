"""The suite in several processes (pytest-xdist): the arguments `make test` adds, and each process's
own Redis database, moved once and inherited by the processes a test starts."""

import os
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from sentinel_site.env import moved_redis_db
from sentinel_site.stack import BASE_DIR, parallel


def test_the_suite_runs_in_one_process_per_core_unless_told(monkeypatch):
    monkeypatch.setenv("SENTINEL_TEST_PROCESSES", "2")
    assert parallel(["tests/x.py"]) == ["-n", "2", "--dist", "worksteal", "tests/x.py"]
    for chosen in (["-n", "0"], ["-n4"], ["--numprocesses=3"], ["-p", "no:xdist"], ["--dist", "load"]):
        assert parallel(chosen) == chosen, chosen
    monkeypatch.setenv("SENTINEL_TEST_PROCESSES", "1")
    assert parallel(["tests/x.py"]) == ["tests/x.py"]


def test_a_redis_url_moves_to_a_lower_database():
    assert moved_redis_db("redis://127.0.0.1:6379/15", -1) == "redis://127.0.0.1:6379/14"
    assert moved_redis_db("redis://:pw@cache:6380/9", -2) == "redis://:pw@cache:6380/7"
    assert moved_redis_db("redis://127.0.0.1:6379", 0) == "redis://127.0.0.1:6379/0"
    with pytest.raises(ImproperlyConfigured, match="leaves no database"):
        moved_redis_db("redis://127.0.0.1:6379/1", -2)


def settings_in_a_process(**env: str) -> list[str]:
    code = "from django.conf import settings; import os; print(settings.REDIS_URL, settings.CELERY_BROKER_URL, os.environ['REDIS_URL'])"
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTEST_XDIST_WORKER", "SENTINEL_TEST_REDIS_MOVED", "CELERY_BROKER_URL")}
    base = {**clean, "DJANGO_SETTINGS_MODULE": "sentinel_site.settings", "SENTINEL_ENV": "test"}
    result = subprocess.run([sys.executable, "-c", code], cwd=BASE_DIR, env={**base, **env}, capture_output=True, text=True, check=True)
    return result.stdout.split()


def test_each_test_process_has_its_own_redis_database_and_its_children_keep_it():
    url = "redis://127.0.0.1:6379/15"
    assert settings_in_a_process(REDIS_URL=url) == [url, url, url], "not under xdist: as configured"
    moved = "redis://127.0.0.1:6379/12"
    assert settings_in_a_process(REDIS_URL=url, PYTEST_XDIST_WORKER="gw3") == [moved, moved, moved]
    broker = "redis://127.0.0.1:6379/11"
    assert settings_in_a_process(REDIS_URL=url, CELERY_BROKER_URL=broker, PYTEST_XDIST_WORKER="gw1")[:2] == [
        "redis://127.0.0.1:6379/14",
        "redis://127.0.0.1:6379/10",
    ]
    # a live stack's web process: the moved URL and the mark in its environment, so it stays
    assert settings_in_a_process(REDIS_URL=moved, PYTEST_XDIST_WORKER="gw3", SENTINEL_TEST_REDIS_MOVED="gw3") == [moved, moved, moved]
    production = settings_in_a_process(REDIS_URL=url, PYTEST_XDIST_WORKER="gw3", SENTINEL_ENV="development")
    assert production == [url, url, url], "only the test settings move"
