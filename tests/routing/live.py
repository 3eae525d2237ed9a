"""Helpers for the routing tests that run through the live stack (uvicorn + a Celery worker)."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import wait_for
from tests.e2e.conftest import worker_is_idle


@pytest.fixture
def settle(db, live_stack):
    """Let the worker finish what a test started before the database is flushed under it."""
    yield
    wait_for(worker_is_idle, timeout=30, message="the worker to go idle")


def body(content: str, **extra) -> dict:
    return {"model": "helper", "messages": [{"role": "user", "content": content}], **extra}


def tokens(lines: list[str]) -> list[str]:
    """The content pieces of an SSE chat stream, in order (the role chunk's empty one aside)."""
    pieces = []
    for line in lines:
        if not line.startswith("data: {"):
            continue
        for choice in json.loads(line[6:]).get("choices", []):
            content = choice.get("delta", {}).get("content")
            if content:
                pieces.append(content)
    return pieces


def client(live_stack, actor, **headers) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=live_stack.api,
        headers={"Authorization": f"Bearer {actor.key}", **headers},
        timeout=60,
        limits=httpx.Limits(max_connections=200),
    )
