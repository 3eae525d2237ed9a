"""Helpers for the runs tests: agents made to order, and the live stack settled after each live test."""

from __future__ import annotations

import httpx
import pytest

from agents.models import Agent
from tests.conftest import wait_for
from tests.e2e.conftest import worker_is_idle


def make_agents(tenant, names: list[str], **fields) -> list[Agent]:
    return [Agent.objects.create(tenant=tenant, name=name, system_prompt=f"You are {name}.", **fields) for name in names]


@pytest.fixture
def live(db, live_stack):
    """The live stack (uvicorn + a Celery worker on the test database), left idle after the test so
    the database is not flushed under work it started."""
    yield live_stack
    wait_for(worker_is_idle, timeout=30, message="the worker to go idle")


def api(stack, actor, **headers) -> httpx.Client:
    return httpx.Client(base_url=stack.api, headers={"Authorization": f"Bearer {actor.key}", **headers}, timeout=60)


def system_prompt(body: dict) -> str:
    """The agent's own prompt: the first line of the first system message (recalled memories follow it)."""
    first = next((m["content"] for m in body["messages"] if m["role"] == "system"), "")
    return first.splitlines()[0] if first else ""
