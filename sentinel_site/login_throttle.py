"""The admin's login form behind a failed-login throttle.

Failed logins are counted in Redis per client IP and per username (hashed: usernames are
attacker-chosen text). Once either reaches SENTINEL_ADMIN_LOGIN_FAILURES failures, each within
SENTINEL_ADMIN_LOGIN_WINDOW_SECONDS of the last, the form answers 429 with
Retry-After without checking the password, so guessing cannot go on, from one address or against
one account from many. A successful login clears its username's count. The per-username count lets
anyone who knows a username lock it out for one window; that is the price of stopping a guess
spread over many addresses, and operators can still use `manage.py` meanwhile.

With Redis out of reach the form fails closed (503): no count, no password check.
"""

from __future__ import annotations

import hashlib

import redis
from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, HttpResponse

from budgets.ratelimit import client_ip
from sentinel_site.redis import sync_client


def _counters(request: HttpRequest) -> list[str]:
    username = request.POST.get("username", "").strip().lower()
    user = hashlib.sha256(username.encode()).hexdigest()[:32]
    return [f"sentinel:login:ip:{client_ip(request)}", f"sentinel:login:user:{user}"]


def login(request: HttpRequest) -> HttpResponse:
    """admin.site.login, refused with 429 while the IP or the username has too many failures."""
    limit = settings.SENTINEL["ADMIN_LOGIN_FAILURES"]
    if request.method != "POST" or limit == 0:
        return admin.site.login(request)
    client = sync_client()
    counters = _counters(request)
    try:
        counts = client.mget(counters)
        if any(int(count or 0) >= limit for count in counts):
            return _refused(max(client.ttl(counter) for counter in counters))
        response = admin.site.login(request)
        if response.status_code in (301, 302, 303):  # logged in: the form redirects onwards
            client.delete(counters[1])
            return response
        window = settings.SENTINEL["ADMIN_LOGIN_WINDOW_SECONDS"]
        pipe = client.pipeline(transaction=False)
        for counter in counters:
            pipe.incr(counter)
            pipe.expire(counter, window)  # a count is forgotten a window after its last failure
        pipe.execute()
        return response
    except redis.RedisError:
        return HttpResponse(
            "Logging in is unavailable for a moment; retry shortly.", status=503, content_type="text/plain", headers={"Retry-After": "5"}
        )


def _refused(ttl: int) -> HttpResponse:
    seconds = max(1, ttl)
    minutes = (seconds + 59) // 60
    return HttpResponse(
        f"Too many failed logins from your address or for this username. Try again in {minutes} minute{'s' if minutes != 1 else ''}.",
        status=429,
        content_type="text/plain",
        headers={"Retry-After": str(seconds)},
    )
