"""Where a tenant-chosen URL may lead: the egress policy for agents' provider base URLs.

A tenant can point an agent at any OpenAI-compatible server. Without a policy that makes every
worker a proxy into the deployment's own network: loopback, private ranges, the cloud metadata
address (169.254.169.254), the deployment's PostgreSQL and Redis. The operator sets
SENTINEL_PROVIDER_ALLOWED_HOSTS, a list of entries:

    api.together.xyz        a host name (exact)
    *.openai.azure.com      any subdomain of a domain
    10.20.0.0/16, 10.1.2.3  addresses (CIDR or single)
    public                  any globally routable address (the default when the list is empty)

A URL is allowed when its host name is listed by name, or when every address it resolves to is
covered by an address entry (or is public, with `public`). The deployment's own services (the
host and port of DATABASE_URL, REDIS_URL and the broker) and unspecified or multicast addresses
are never allowed. The URL is checked when an agent is saved, and every connection is checked
again when it is made (DNS can change between the two): `GuardedTransport` resolves the name
itself, checks each address and connects to the address it checked, so no second lookup can
be swapped in.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

import httpcore2
import httpx2
from django.conf import settings

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class EgressDenied(ValueError):
    """A tenant-chosen URL leads somewhere this deployment does not let it go."""


@dataclass(frozen=True)
class Policy:
    names: frozenset[str]
    suffixes: tuple[str, ...]
    networks: tuple[Network, ...]
    public: bool
    internal: frozenset[tuple[Address, int]]  # (address, port) of our own services

    def is_internal(self, address: Address, port: int) -> bool:
        """Our own service's address and port; all loopback addresses count as one."""
        return any(port == p and (address == a or (address.is_loopback and a.is_loopback)) for a, p in self.internal)

    def allows_name(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        return host in self.names or any(host.endswith(suffix) for suffix in self.suffixes)

    def allows_address(self, address: Address) -> bool:
        if address.is_unspecified or address.is_multicast:
            return False
        if any(address in network for network in self.networks):
            return True
        return self.public and address.is_global


def parse_policy(entries: Iterable[str], internal: Iterable[tuple[Address, int]] = ()) -> Policy:
    """The policy for a list of allowlist entries (see the module docstring); ValueError names a bad one."""
    names, suffixes, networks, public = set(), [], [], False
    entries = [entry.strip() for entry in entries if entry.strip()]
    for entry in entries:
        if entry.lower() == "public":
            public = True
        elif entry.startswith("*."):
            suffixes.append(entry[1:].lower())
        else:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                if not _looks_like_host(entry):
                    raise ValueError(f"{entry!r} is not a host name, an address, a CIDR range or `public`") from None
                names.add(entry.lower().rstrip("."))
    return Policy(
        names=frozenset(names),
        suffixes=tuple(suffixes),
        networks=tuple(networks),
        public=public or not entries,
        internal=frozenset(internal),
    )


def _looks_like_host(value: str) -> bool:
    labels = value.rstrip(".").split(".")
    return all(label and len(label) <= 63 and label.replace("-", "").isalnum() for label in labels)


@lru_cache(maxsize=4)
def _policy_for(entries: tuple[str, ...], services: tuple[tuple[str, int], ...]) -> Policy:
    internal: list[tuple[Address, int]] = []
    for host, port in services:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError):
            continue
        internal.extend((_plain(ipaddress.ip_address(str(info[4][0]).split("%")[0])), port) for info in infos)
    return parse_policy(entries, internal)


def policy() -> Policy:
    """The deployment's policy (parsed, and its own services resolved, once per distinct setting)."""
    return _policy_for(tuple(settings.SENTINEL["PROVIDER_ALLOWED_HOSTS"]), tuple(internal_services()))


def internal_services() -> list[tuple[str, int]]:
    """(host, port) of the services a tenant URL must never reach, whatever the allowlist says."""
    services = []
    database = settings.DATABASES["default"]
    if database.get("HOST") and not database["HOST"].startswith("/"):
        services.append((database["HOST"], int(database.get("PORT") or 5432)))
    for url in (settings.REDIS_URL, settings.CELERY_BROKER_URL):
        parts = urlsplit(url)
        if parts.hostname:
            services.append((parts.hostname, parts.port or 6379))
    return services


def _port(url_port: int | None, scheme: str) -> int:
    return url_port or (443 if scheme == "https" else 80)


def check_url(url: str) -> None:
    """Raise EgressDenied unless `url` is an http(s) URL whose host the policy allows (resolving it)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EgressDenied("must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise EgressDenied("must not carry credentials; set the provider API key instead")
    try:
        port = _port(parts.port, parts.scheme)
    except ValueError:
        raise EgressDenied("has an invalid port") from None
    resolve_allowed(parts.hostname, port)


def resolve_allowed(host: str, port: int) -> list[str]:
    """The addresses of host:port, every one checked against the policy; EgressDenied otherwise."""
    rules = policy()
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise EgressDenied(f"the host {host!r} could not be resolved") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    named = rules.allows_name(host)
    for raw in addresses:
        address = _plain(ipaddress.ip_address(raw.split("%")[0]))
        if rules.is_internal(address, port):
            raise EgressDenied(f"{host}:{port} leads to one of this deployment's own services")
        if not named and not rules.allows_address(address):
            raise EgressDenied(f"{host} resolves to {raw}, which SENTINEL_PROVIDER_ALLOWED_HOSTS does not allow")
    return addresses


def _plain(address: Address) -> Address:
    """An IPv4-mapped IPv6 address (::ffff:10.0.0.1) is the IPv4 address it maps."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


# --- the connection-time check -----------------------------------------------------------------
class _GuardedBackend(httpcore2.SyncBackend):
    """Resolves, checks and connects to the checked address: the connection-time half of the policy."""

    def connect_tcp(self, host: str, port: int, timeout=None, local_address=None, socket_options=None):
        addresses = resolve_allowed(host, port)
        last: Exception | None = None
        for address in addresses:
            try:
                return super().connect_tcp(address, port, timeout=timeout, local_address=local_address, socket_options=socket_options)
            except httpcore2.ConnectError as error:
                last = error
        raise last or httpcore2.ConnectError(f"could not connect to {host}:{port}")


class GuardedTransport(httpx2.HTTPTransport):
    """An httpx transport whose every new connection goes through the egress policy.

    No proxy from the environment (the check must see the real destination) and TLS still
    verifies the URL's host name: only the TCP connection is made to the checked address.
    """

    def __init__(self) -> None:
        super().__init__(trust_env=False)
        # The pool hands its backend to each connection it opens; it has opened none yet.
        self._pool._network_backend = _GuardedBackend()


def guarded_http_client(timeout: httpx2.Timeout) -> httpx2.Client:
    """An HTTP client for tenant-chosen URLs: egress-checked connections, no redirects, no env proxies."""
    return httpx2.Client(transport=GuardedTransport(), timeout=timeout, follow_redirects=False, trust_env=False)
