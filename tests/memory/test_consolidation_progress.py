"""Consolidation progress: each run's stage and the conversation's messages consolidated of its
total, in the API (GET /v1/conversations/{id}/consolidations) and the admin."""

import pytest
from django.test import Client

from memory import dreamer
from tests.memory.helpers import FILLER, conversation_with
from tests.stub_llm import Reply

pytestmark = pytest.mark.django_db


def test_runs_report_their_stage_and_progress(alice, stub_llm, settings):
    settings.SENTINEL = {**settings.SENTINEL, "DREAMER_SPAN_TOKENS": 150}
    conversation = conversation_with(alice, [f"{FILLER[i % 8]} ({i})" for i in range(40)], consolidation_threshold=200)
    stub_llm.script(*[Reply(content="- they chatted") for _ in range(10)])
    dreamer.consolidate(conversation.id)
    body = Client().get(f"/v1/conversations/{conversation.id}/consolidations", **alice.auth).json()
    runs = body["data"]
    assert runs and all(run["status"] == "succeeded" and run["stage"] == "done" for run in runs)
    assert [run["consolidated_messages"] for run in runs] == sorted((run["consolidated_messages"] for run in runs), reverse=True)
    assert runs[0]["consolidated_messages"] == body["progress"]["consolidated_messages"] > 0
    assert runs[0]["total_messages"] == body["progress"]["total_messages"] == 40


def test_another_tenants_runs_are_a_404(alice, bob):
    conversation = conversation_with(alice, FILLER, index=False)
    response = Client().get(f"/v1/conversations/{conversation.id}/consolidations", **bob.auth)
    assert response.status_code == 404 and response.json()["error"]["code"]
