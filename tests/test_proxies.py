"""X-Forwarded-For and X-Forwarded-Proto are believed only from SENTINEL_TRUSTED_PROXIES, and the
client is the rightmost hop that is not one of them."""

import ipaddress

import pytest
from django.test import Client

from sentinel_site.proxies import client_address

PROXIES = (ipaddress.ip_network("10.0.0.0/24"), ipaddress.ip_network("fd00::/64"))


@pytest.mark.parametrize(
    "remote,forwarded,client",
    [
        ("198.51.100.9", "6.6.6.6", "198.51.100.9"),  # not from a proxy: the header is the client's own claim
        ("10.0.0.1", "203.0.113.5", "203.0.113.5"),
        ("10.0.0.1", "6.6.6.6, 203.0.113.5", "203.0.113.5"),  # the leftmost hop is whatever the client wrote
        ("10.0.0.1", "6.6.6.6, 203.0.113.5, 10.0.0.2", "203.0.113.5"),  # through two of our proxies
        ("10.0.0.1", "", "10.0.0.1"),
        ("10.0.0.1", "10.0.0.3, 10.0.0.2", "10.0.0.3"),  # only proxies: the farthest one
        ("10.0.0.1", "6.6.6.6, unknown", "10.0.0.1"),  # a hop no one can vouch for ends the walk
        ("10.0.0.1", "203.0.113.5:4711", "203.0.113.5"),
        ("10.0.0.1", "[2001:db8::7]:443", "2001:db8::7"),
        ("fd00::1", "2001:db8::7", "2001:db8::7"),
        ("::ffff:10.0.0.1", "203.0.113.5", "203.0.113.5"),  # an IPv4 proxy seen on a dual-stack socket
    ],
)
def test_the_client_is_the_rightmost_untrusted_hop(remote, forwarded, client):
    assert client_address(remote, forwarded, PROXIES) == client


def per_ip_limit(settings, limit, proxies=()):
    settings.SENTINEL = {**settings.SENTINEL, "RATE_LIMIT_PER_IP": limit, "TRUSTED_PROXIES": tuple(proxies)}


@pytest.mark.django_db
@pytest.mark.usefixtures("rate_window")
def test_x_forwarded_for_from_anyone_else_is_ignored(settings, alice):
    per_ip_limit(settings, 1)
    client = Client()
    assert client.get("/v1/models", HTTP_X_FORWARDED_FOR="1.1.1.1", **alice.auth).status_code == 200
    assert client.get("/v1/models", HTTP_X_FORWARDED_FOR="2.2.2.2", **alice.auth).status_code == 429, "a forged header is no new client"


@pytest.mark.django_db
@pytest.mark.usefixtures("rate_window")
def test_clients_behind_a_trusted_proxy_are_told_apart_and_cannot_forge_their_way_out(settings, alice):
    per_ip_limit(settings, 1, PROXIES)
    client = Client()
    behind = {"REMOTE_ADDR": "10.0.0.1", **alice.auth}
    assert client.get("/v1/models", HTTP_X_FORWARDED_FOR="1.1.1.1, 203.0.113.5", **behind).status_code == 200
    assert client.get("/v1/models", HTTP_X_FORWARDED_FOR="2.2.2.2, 203.0.113.5", **behind).status_code == 429
    assert client.get("/v1/models", HTTP_X_FORWARDED_FOR="203.0.113.6", **behind).status_code == 200, "another client of the proxy"


@pytest.mark.django_db
def test_x_forwarded_proto_counts_only_from_a_trusted_proxy(settings):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_SSL_REDIRECT = True
    settings.SENTINEL = {**settings.SENTINEL, "TRUSTED_PROXIES": PROXIES}
    client = Client()
    forged = client.get("/v1/models", REMOTE_ADDR="198.51.100.9", HTTP_X_FORWARDED_PROTO="https")
    assert forged.status_code == 301 and forged["Location"].startswith("https://"), "a client cannot claim HTTPS for itself"
    proxied = client.get("/v1/models", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_PROTO="https")
    assert proxied.status_code == 401, "from our proxy the request is HTTPS: no redirect, on to authentication"
