"""timestamptz values load as aware UTC datetimes through sentinel_site.db.UtcTimestamptzLoader,
equal to what Django's own loader gives, BC dates and all."""

import datetime

import psycopg
import pytest
from django import db
from django.db import connection
from django.utils import timezone

from sentinel_site.db import UtcTimestamptzLoader, _timestamptz_oid

pytestmark = pytest.mark.django_db


def test_connections_load_timestamps_with_the_fast_loader():
    connection.ensure_connection()
    assert connection.connection.adapters.get_loader(_timestamptz_oid(), 0) is UtcTimestamptzLoader


@pytest.mark.parametrize(
    "literal, expected",
    [
        ("'2026-12-01 22:35:13.123456+00'", datetime.datetime(2026, 12, 1, 22, 35, 13, 123456, tzinfo=datetime.UTC)),
        ("'2026-12-01 23:35:13+01'", datetime.datetime(2026, 12, 1, 22, 35, 13, tzinfo=datetime.UTC)),
        ("'2026-06-30 12:00:00.5-07:30'", datetime.datetime(2026, 6, 30, 19, 30, 0, 500000, tzinfo=datetime.UTC)),
    ],
)
def test_it_loads_the_same_instant_in_utc(literal, expected):
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {literal}::timestamptz")
        value = cursor.fetchone()[0]
    assert value == expected and value.tzinfo is datetime.UTC


def test_a_date_iso_cannot_read_goes_to_psycopgs_own_loader():
    with connection.cursor() as cursor, pytest.raises((psycopg.DataError, db.DataError)):  # the error Django's loader gave
        cursor.execute("SELECT '0044-03-15 12:00:00+00 BC'::timestamptz")
        cursor.fetchone()


def test_what_django_writes_comes_back_equal():
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute("SELECT %s::timestamptz", [now])
        assert cursor.fetchone()[0] == now
