"""Each process's connection pool is visible (sentinel_db_pool_connections): a connection a thread
holds counts as checked out until it goes back, which PostgreSQL alone cannot tell."""

import threading

import pytest
from django.db import connection
from prometheus_client import REGISTRY

from sentinel_site import db

pytestmark = pytest.mark.django_db(transaction=True)


def gauge(state: str) -> float:
    return REGISTRY.get_sample_value("sentinel_db_pool_connections", {"process": "web", "state": state}) or 0.0


def test_a_held_connection_counts_as_checked_out_until_it_goes_back():
    connection.close()
    db.record_pool()
    before = gauge("checked_out")
    holding, release = threading.Event(), threading.Event()

    def hold():
        connection.ensure_connection()
        holding.set()
        release.wait(10)
        connection.close()

    thread = threading.Thread(target=hold)
    thread.start()
    holding.wait(10)
    db.record_pool()
    assert gauge("checked_out") == before + 1, "a thread holds one"
    assert gauge("open") >= gauge("checked_out")
    release.set()
    thread.join(10)
    db.record_pool()
    assert gauge("checked_out") == before, "closed: back in the pool"


def test_every_process_watches_its_pool_from_its_first_connection():
    assert db._watched_pid[0] != 0, "the connection_created receiver started the process's sampler"
    assert any(thread.name == "db-pool-gauge" for thread in threading.enumerate())
