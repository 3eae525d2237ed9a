"""The group commit (sentinel_site/groupcommit.py) never waits for a connection its own callers hold."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.conf import settings
from django.db import connection

from sentinel_site.db import pool_stats
from sentinel_site.groupcommit import GroupCommit

pytestmark = pytest.mark.django_db(transaction=True)


def _echo(items):
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return list(items)


def test_callers_that_hold_every_pooled_connection_do_not_starve_the_commit():
    pool = settings.DATABASES["default"]["OPTIONS"].get("pool")
    assert pool, "the test settings use the connection pool, as every process does"
    connection.ensure_connection()  # this thread holds one too
    # With this thread's and any other threads' of the test run: every connection the pool may have.
    callers = pool["max_size"] - pool_stats()["checked_out"]
    assert callers >= 2, pool_stats()
    committer = GroupCommit("pool-test", _echo, wait_seconds=0.2)
    holding = threading.Barrier(callers)

    def finish(n):
        try:
            connection.ensure_connection()  # a turn that read and wrote before it finished
            holding.wait(timeout=10)
            return committer.submit(n)
        except Exception as error:
            return error
        finally:
            connection.close()

    with ThreadPoolExecutor(callers) as threads:
        results = list(threads.map(finish, range(callers)))
    assert results == list(range(callers)), "each caller's item committed, none failed waiting for a connection"
