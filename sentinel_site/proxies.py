"""Who the client is when reverse proxies stand in front of Sentinel.

`X-Forwarded-For` and `X-Forwarded-Proto` are written by whoever sent the request, so they are
believed only when the connection comes from a proxy the operator listed in
SENTINEL_TRUSTED_PROXIES. Each proxy appends the address it saw to `X-Forwarded-For`; reading it
from the right, every trusted hop vouches for the one to its left, and the first hop that is not a
trusted proxy is the client. Anything further left was written by that client and may be forged,
which is why the leftmost entry (what naive code takes) is never used.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_address(text: str) -> Address | None:
    """An IP address from a header hop or REMOTE_ADDR (`1.2.3.4`, `1.2.3.4:80`, `[::1]:80`), else None."""
    text = text.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else text
    elif text.count(":") == 1:  # IPv4 with a port; a bare IPv6 address has at least two colons
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:10.0.0.1 is 10.0.0.1 to a dual-stack socket
    return address


def is_trusted(address: Address | None, trusted: Iterable[Network]) -> bool:
    return address is not None and any(address in network for network in trusted)


def client_address(remote: str, forwarded_for: str, trusted: tuple[Network, ...]) -> str:
    """The client's address: REMOTE_ADDR unless it is a trusted proxy, else the rightmost
    X-Forwarded-For hop that is not one. A hop that is not an address (a proxy writing "unknown")
    ends the walk: nothing left of it can be vouched for, so the last trusted hop stands in."""
    peer = parse_address(remote)
    if not is_trusted(peer, trusted):
        return remote
    client = str(peer)
    for hop in reversed(forwarded_for.split(",")):
        address = parse_address(hop)
        if address is None:
            break
        client = str(address)
        if not is_trusted(address, trusted):
            break
    return client
