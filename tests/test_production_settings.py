"""What production refuses and turns on: published or weak secret keys, the old X-Forwarded-For
switch; HSTS and HTTPS redirects with health and metrics exempt. Settings are read at import, so the
wiring is checked in a fresh process with the environment under test."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sentinel_site.production import DEVELOPMENT_SECRET_KEY, secret_key_problem

BASE_DIR = Path(__file__).resolve().parent.parent
STRONG = "q7-Vt3bJ0xWm9LrE2sKfZ8aHc4Np6YdU1gTiOw5jBvQlXyMnRu"

# A test Client inside production settings; no database is touched by these requests.
PROBE = """
import django; django.setup()
from django.test import Client
c = Client()
live, api, metrics = c.get("/health/live"), c.get("/v1/models"), c.get("/metrics")
secure = c.get("/health/live", secure=True)
print(live.status_code, api.status_code, api.get("Location", ""), metrics.status_code, secure.get("Strict-Transport-Security", "-"))
"""


def run_settings(**env: str) -> subprocess.CompletedProcess:
    # Production also requires an audit key (tests/budgets/test_audit.py covers its refusals).
    audit_key = {"SENTINEL_AUDIT_KEY": "a-test-audit-key-of-32-characters-or-more"}
    full = {**os.environ, "DJANGO_SETTINGS_MODULE": "sentinel_site.settings", "SENTINEL_ALLOWED_HOSTS": "testserver", **audit_key, **env}
    full.pop("SENTINEL_SECRET_KEY_FILE", None)
    full.pop("SENTINEL_AUDIT_KEY_FILE", None)
    return subprocess.run([sys.executable, "-c", PROBE], cwd=BASE_DIR, env=full, capture_output=True, text=True)


@pytest.mark.parametrize(
    "key,problem",
    [
        (DEVELOPMENT_SECRET_KEY, "default"),
        ("change-me-in-production", "default"),
        ("django-insecure-" + STRONG, "default"),
        ("x" * 49 + "yz", "different characters"),
        ("a-short-but-random-Key-9", "at least 50 characters"),
    ],
)
def test_published_or_weak_secret_keys_are_refused(key, problem):
    assert problem in (secret_key_problem(key) or "")


def test_a_long_random_secret_key_is_accepted():
    assert secret_key_problem(STRONG) is None


def test_production_will_not_start_with_docker_composes_old_default_secret():
    result = run_settings(SENTINEL_ENV="production", SENTINEL_SECRET_KEY="change-me-in-production")
    assert result.returncode != 0
    assert "SENTINEL_SECRET_KEY is a default published with Sentinel" in result.stderr, result.stderr[-2000:]


def test_docker_compose_ships_no_default_secret_key():
    compose = (BASE_DIR / "docker-compose.yml").read_text()
    line = re.search(r"^\s*SENTINEL_SECRET_KEY:\s*(.+)$", compose, re.MULTILINE).group(1)
    assert line.startswith("${SENTINEL_SECRET_KEY:?"), f"compose must require the secret, not default it: {line}"


def test_production_redirects_to_https_sends_hsts_and_spares_probes_and_scrapes():
    result = run_settings(SENTINEL_ENV="production", SENTINEL_SECRET_KEY=STRONG)
    assert result.returncode == 0, result.stderr[-2000:]
    live, api, location, metrics, hsts = result.stdout.split()
    assert api == "301" and location.startswith("https://testserver/v1/models")
    assert live == "200", "health probes over plain HTTP inside the cluster must not be redirected"
    assert metrics == "403", "the scrape is answered (refused without a token), not redirected"
    assert hsts == "max-age=31536000"


def test_the_old_x_forwarded_for_switch_stops_start_up_naming_its_replacement():
    result = run_settings(SENTINEL_TRUST_X_FORWARDED_FOR="true")
    assert result.returncode != 0 and "SENTINEL_TRUSTED_PROXIES" in result.stderr, result.stderr[-2000:]


def test_a_trusted_proxy_that_is_no_address_stops_start_up():
    result = run_settings(SENTINEL_TRUSTED_PROXIES="10.0.0.0/8,proxy.internal")
    assert result.returncode != 0
    assert "SENTINEL_TRUSTED_PROXIES must list IP addresses or CIDR networks" in result.stderr, result.stderr[-2000:]


def test_asynchronous_commit_is_opt_in_and_set_on_the_connection_itself():
    probe = (
        "import django; django.setup(); from django.db import connection; "
        "c = connection.cursor(); c.execute('SHOW synchronous_commit'); print(c.fetchone()[0])"
    )
    for durability, expected in (("sync", "on"), ("async", "off")):
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "sentinel_site.settings", "SENTINEL_DURABILITY": durability}
        shown = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60, cwd=BASE_DIR)
        assert shown.stdout.strip() == expected, shown.stderr[-2000:]
