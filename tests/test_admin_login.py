"""The admin's login form is throttled per client IP and per username: past the limit it answers 429
without checking the password."""

from unittest import mock

import pytest
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import User
from django.test import Client

pytestmark = pytest.mark.django_db

LOGIN = "/admin/login/"


@pytest.fixture
def operator(settings):
    settings.SENTINEL = {**settings.SENTINEL, "ADMIN_LOGIN_FAILURES": 5, "ADMIN_LOGIN_WINDOW_SECONDS": 900}
    return User.objects.create_superuser("operator", "op@example.com", "correct horse battery staple")


def attempt(username, password, ip="198.51.100.20"):
    return Client().post(LOGIN, {"username": username, "password": password, "next": "/admin/"}, REMOTE_ADDR=ip)


def test_five_failures_for_a_username_lock_it_even_against_the_right_password(operator):
    assert [attempt("operator", f"guess {i}", ip=f"198.51.100.{i}").status_code for i in range(5)] == [200] * 5
    with mock.patch.object(ModelBackend, "authenticate", autospec=True) as backend:
        refused = attempt("operator", "correct horse battery staple", ip="203.0.113.1")
    backend.assert_not_called()
    assert refused.status_code == 429, "from a new address too: the guess is spread over many"
    assert "Too many failed logins" in refused.content.decode() and int(refused["Retry-After"]) > 0
    assert "_auth_user_id" not in refused.client.session, "refused without logging in"


def test_five_failures_from_an_address_lock_it_for_every_username(operator):
    assert [attempt(f"someone{i}", "guess").status_code for i in range(5)] == [200] * 5
    assert attempt("operator", "correct horse battery staple").status_code == 429
    assert attempt("operator", "correct horse battery staple", ip="203.0.113.2").status_code == 302, "another address may log in"


def test_a_successful_login_clears_its_usernames_failures(operator):
    for i in range(4):
        attempt("operator", f"guess {i}", ip=f"198.51.100.{i}")
    assert attempt("operator", "correct horse battery staple", ip="203.0.113.3").status_code == 302
    assert [attempt("operator", f"again {i}", ip=f"192.0.2.{i}").status_code for i in range(4)] == [200] * 4


def test_the_login_page_itself_still_shows(operator):
    for i in range(6):
        attempt("operator", f"guess {i}")
    assert Client().get(LOGIN, REMOTE_ADDR="198.51.100.20").status_code == 200
