"""What the chat completions view asks routing around admission: a cached answer (routing/cache.py)
or an identical request in flight to share (routing/dedup.py), before a turn is admitted; and
after, what to do once that turn is done (keep its answer, account a follower). The view calls
`before` in the thread that admits (config lookups are synchronous), everything else on its loop.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from django.http import HttpResponse, JsonResponse, StreamingHttpResponse

from agents.admission import Admission, find_agent
from agents.models import Turn
from budgets.auth import Principal
from routing import cache, dedup, metrics, policy
from sentinel_site.errors import ApiError

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _header(headers: Mapping[str, str], name: str, allowed: tuple[str, ...]) -> str | None:
    value = headers.get(name)
    if value is None:
        return None
    value = value.strip().lower()
    if value not in allowed:
        raise ApiError(400, f"{name} must be one of: {', '.join(allowed)}.", param=name, code="invalid_value")
    return value


def _latency_budget(headers: Mapping[str, str]) -> int | None:
    value = headers.get("Sentinel-Latency-Budget-Ms")
    if value is None:
        return None
    if not value.strip().isdigit() or not 0 < int(value) <= 600_000:
        raise ApiError(
            400,
            "Sentinel-Latency-Budget-Ms must be whole milliseconds, 1 to 600000.",
            param="Sentinel-Latency-Budget-Ms",
            code="invalid_value",
        )
    return int(value)


class Front:
    """One request's way past the cache and shared streams. `own_turn`: the request must have a
    turn of its own (Prefer: respond-async, or an Idempotency-Key): neither applies."""

    def __init__(self, headers: Mapping[str, str], data: dict[str, Any], *, own_turn: bool) -> None:
        self.data = data
        self.own_turn = own_turn
        self.dedup_header = _header(headers, "Sentinel-Dedup", ("on", "off"))
        self.cache_header = _header(headers, "Sentinel-Cache", cache.HEADER_VALUES)
        budget = _latency_budget(headers)
        if budget is not None:
            data["latency_budget_ms"] = budget  # kept in the turn's params for its route (admission.call_params)
        self.cached: dict[str, Any] | None = None
        self.shared: dedup.Shared | None = None
        self.dedup_key = ""  # set while this request leads or waits for its twin
        self.leads = False
        self.cache_key = ""  # set while a miss is to be filled
        self.cache_seconds = 0
        self.follower = ""  # who a follower is, for its usage (dedup.follower_id)
        self.agent_id: object = None
        self.headers: dict[str, str] = {}

    # --- in the admitting thread ----------------------------------------------------------------
    def before(self, principal: Principal) -> bool:
        """True: admit the request. False: it is answered from the cache (`cached`), rides a turn in
        flight (`admission()`), or waits for its twin's admission (`join`)."""
        if self.own_turn:
            return True
        agent = find_agent(principal.tenant, self.data["model"])
        spec = policy.for_agent(agent.id)
        tenant_id = principal.tenant.id
        if cache.wanted(self.cache_header, spec.cache_seconds, spec.cache_always, spec.cache_history, self.data):
            key = cache.key_for(tenant_id, agent.id, self.data)
            self.cached = cache.lookup(key, agent.id)
            self.headers["Sentinel-Cache"] = "hit" if self.cached is not None else "miss"
            if self.cached is not None:
                return False
            self.cache_key, self.cache_seconds = key, spec.cache_seconds
        if not dedup.wanted(self.dedup_header, spec, self.data, agent.default_params):
            return True
        self.dedup_key, self.agent_id = dedup.key_for(tenant_id, agent.id, self.data), agent.id
        found = dedup.claim(self.dedup_key)
        if found is True:
            self.leads = True
            return True
        self.follower = dedup.follower_id(tenant_id, principal.api_key.id if principal.api_key else None)
        if isinstance(found, dedup.Shared):
            dedup.attach(found, self.follower, agent.id)
            self._share(found)
        return False

    def admitted(self, turn: Turn) -> None:
        if self.leads:
            dedup.publish(self.dedup_key, turn)
            self.headers["Sentinel-Dedup"] = "leader"
            metrics.DEDUP_REQUESTS.labels("leader").inc()

    def failed(self) -> None:
        if self.leads:
            dedup.abandon(self.dedup_key)

    def admission(self) -> Admission | None:
        """The shared turn, as the view's admission (None: answered from the cache, or waiting)."""
        if self.shared is None:
            return None
        turn = Turn(id=self.shared.turn_id, conversation_id=self.shared.conversation_id, created_at=self.shared.created_at)
        return Admission(turn, created=True)

    def _share(self, shared: dedup.Shared) -> None:
        self.shared = shared
        self.cache_key = ""  # the leader keeps the answer
        self.headers["Sentinel-Dedup"] = "shared"
        metrics.DEDUP_REQUESTS.labels("shared").inc()

    # --- on the view's loop ---------------------------------------------------------------------
    async def join(self) -> Admission | None:
        """Ride the turn of the twin being admitted; None if it gave up (admit this one alone)."""
        if not self.dedup_key:
            return None
        shared = await dedup.join(self.dedup_key, self.follower, self.agent_id)
        if shared is None:
            return None
        self._share(shared)
        return self.admission()

    def follow(self, turn_id: object) -> None:
        """Once the turn is done: keep its answer (a cache miss), account its followers' usage (the
        leader every follower listed, a follower itself: whichever is first writes each entry)."""
        if self.cache_key:
            cache.fill_when_done(turn_id, self.cache_key, self.cache_seconds)
        if self.leads:
            dedup.account_when_done(turn_id)
        elif self.shared is not None:
            dedup.account_when_done(turn_id, self.follower)

    def on_gone(self, turn_id: object, cancel: Callable[[], None] | None) -> Callable[[], None] | None:
        """A shared turn is cancelled by a leaving client only when nobody else reads it."""
        if self.shared is None and not self.leads:
            return cancel
        return dedup.last_one_out(turn_id, cancel)

    def cached_response(self) -> HttpResponse:
        assert self.cached is not None
        headers = {"Sentinel-Cache": "hit"}
        if not self.data.get("stream"):
            return JsonResponse(self.cached, headers=headers)
        include_usage = bool((self.data.get("stream_options") or {}).get("include_usage"))
        chunks = [f"data: {json.dumps(c, separators=(',', ':'))}\n\n".encode() for c in cache.replay_chunks(self.cached, include_usage)]

        async def body() -> AsyncIterator[bytes]:
            for chunk in [*chunks, b"data: [DONE]\n\n"]:
                yield chunk

        return StreamingHttpResponse(body(), content_type="text/event-stream", headers={**SSE_HEADERS, **headers})
