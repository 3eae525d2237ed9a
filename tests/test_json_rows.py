"""Rows sent as one JSON parameter (`db.recordset` / `db.json_rows`): every value comes back as the
column's type, whatever it holds; and the statements that use them stay within psycopg's cache."""

import datetime
import itertools
import json
import uuid
from decimal import Decimal

import numpy as np
import psycopg._queries
import pytest
from django.db import connection

from memory import embeddings, search, search_sql
from sentinel_site import db

pytestmark = pytest.mark.django_db

TYPES = "id uuid, n int, price numeric, at timestamptz, label text, payload jsonb, vector vector"


def read_back(rows: list[dict]) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id, n, price, at, label, payload, vector::text FROM {db.recordset('v', TYPES)}",
            [db.json_rows(rows)],
        )
        return cursor.fetchall()


def test_awkward_values_come_back_as_they_went():
    at = datetime.datetime(2026, 12, 3, 17, 4, 5, 123456, tzinfo=datetime.UTC)
    text = 'he said "hi", {braces}, a \\ backslash, \' a quote, ünïcödé, emoji \U0001f600, a tab\tand\nnewline'
    payload = {"event": "provider_request", "nested": {"list": [1, 2.5, None, True], "text": text}}
    row = {
        "id": uuid.uuid4(),
        "n": -7,
        "price": Decimal("0.000001234500"),
        "at": at,
        "label": text,
        "payload": payload,
        "vector": [1.0, -0.25, 3e-05],
    }
    [(got_id, n, price, got_at, label, got_payload, vector)] = read_back([row])
    assert (got_id, n, got_at, label, json.loads(got_payload)) == (row["id"], -7, at, text, payload)  # Django reads jsonb as text
    assert price == Decimal("0.000001234500")  # a Decimal travels as a string: no float rounding
    assert vector == "[1,-0.25,3e-05]"


def test_missing_and_null_values_are_null():
    [(_, n, price, at, label, payload, vector)] = read_back([{"id": uuid.uuid4(), "label": None}])
    assert (n, price, at, label, payload, vector) == (None, None, None, None, None, None)


def test_numpy_vectors_and_scalars_travel_as_numbers():
    vector = np.array([0.5, -1.5], dtype=np.float32)
    [row] = read_back([{"id": uuid.uuid4(), "n": np.int64(3), "vector": vector}])
    assert row[1] == 3 and row[6] == "[0.5,-1.5]"


def test_a_value_of_the_wrong_type_fails_the_statement():
    with pytest.raises(Exception, match="invalid input syntax for type integer"):
        read_back([{"id": uuid.uuid4(), "n": "seven"}])


def test_no_rows_is_an_empty_set():
    assert read_back([]) == []


def test_a_one_vector_hybrid_statement_stays_within_psycopgs_cache_of_parsed_statements():
    """psycopg splits a statement longer than its limit again on every call (bench/HISTORY.md row 59)."""
    condition, _ = search_sql.scope(uuid.uuid4(), embeddings.model_name(), agent_id=uuid.uuid4())
    for exact, rank in itertools.product((True, False), ("ts_rank_cd", "ts_rank")):
        assert len(search._statement(condition, 1, exact, rank).encode()) <= psycopg._queries.MAX_CACHED_STATEMENT_LENGTH
