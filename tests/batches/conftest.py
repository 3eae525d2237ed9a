"""Helpers for the batches tests: JSONL files made to order and an openai client on the live stack."""

from __future__ import annotations

import io
import json

import openai
import pytest

from tests.conftest import wait_for
from tests.e2e.conftest import worker_is_idle


def line(custom_id: str, content: str = "hi", model: str = "helper", **body) -> dict:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": content}], **body},
    }


def jsonl(*records: dict | str) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records).encode()


def upload(client: openai.OpenAI, content: bytes, name: str = "batch.jsonl"):
    return client.files.create(file=(name, io.BytesIO(content)), purpose="batch")


def output_records(client: openai.OpenAI, file_id: str | None) -> list[dict]:
    if file_id is None:
        return []
    return [json.loads(text) for text in client.files.content(file_id).text.splitlines()]


@pytest.fixture(autouse=True)
def _no_realtime_mark():
    """Batches run at their full bound unless a test marks real-time turns as running: another
    test's claims leave the mark for a couple of seconds (agents/activity.py)."""
    from agents import activity
    from sentinel_site.redis import sync_client

    sync_client().delete(activity.KEY)


@pytest.fixture
def live(db, live_stack):
    yield live_stack
    wait_for(worker_is_idle, timeout=60, message="the worker to go idle")


@pytest.fixture
def client(live, alice):
    return openai.OpenAI(base_url=live.api, api_key=alice.key, max_retries=0, timeout=30)
