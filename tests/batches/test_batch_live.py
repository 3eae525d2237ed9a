"""A batch through the official openai client against a live stack: every line a turn, one result per custom_id."""

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agents.models import Turn, TurnStatus
from batches.models import Batch, BatchLine
from budgets.models import AuditEntry
from tests.batches.conftest import jsonl, line, output_records, upload
from tests.conftest import make_actor, wait_for
from tests.stub_llm import Reply

pytestmark = pytest.mark.django_db(transaction=True)


def finished(client, batch_id):
    batch = client.batches.retrieve(batch_id)
    return batch if batch.status in ("completed", "failed", "expired", "cancelled") else None


def test_it_runs_every_line_and_matches_results_by_custom_id(client, live, stub_llm):
    stub_llm.script(*[Reply(content=f"answer {i}") for i in range(5)])
    content = jsonl(*[line(f"req-{i}", f"question {i}") for i in range(5)])
    file = upload(client, content)
    assert file.purpose == "batch" and file.bytes == len(content) and file.id.startswith("file-")
    batch = client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h", metadata={"job": "t1"})
    assert batch.status == "validating" and batch.metadata == {"job": "t1"}
    done = wait_for(lambda: finished(client, batch.id), timeout=60, interval=0.3, message="the batch to end")
    assert done.status == "completed"
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (5, 5, 0)
    assert done.error_file_id is None
    records = output_records(client, done.output_file_id)
    assert sorted(r["custom_id"] for r in records) == [f"req-{i}" for i in range(5)]
    for record in records:
        assert record["error"] is None and record["response"]["status_code"] == 200
        assert record["response"]["body"]["object"] == "chat.completion"
    answers = {r["response"]["body"]["choices"][0]["message"]["content"] for r in records}
    assert answers == {f"answer {i}" for i in range(5)}
    assert Turn.objects.filter(status=TurnStatus.SUCCEEDED).count() == 5, "each line is one turn"
    assert AuditEntry.objects.filter(action="batch.created", target=batch.id).exists()
    families = {f.name: f for f in text_string_to_metric_families(httpx.get(f"{live.base_url}/metrics").text)}
    ended = {s.labels["status"]: s.value for s in families["sentinel_batches"].samples if s.name == "sentinel_batches_total"}
    assert ended.get("completed", 0) >= 1, "the worker's count of ended batches reaches /metrics"


def test_bad_lines_go_to_the_error_file_and_never_fail_the_batch(client, stub_llm):
    stub_llm.script(Reply(content="fine"), Reply(content="fine too"))
    content = jsonl(
        line("good-1"),
        "{not json",
        {"method": "POST", "url": "/v1/chat/completions", "body": {}},
        line("good-1", "a duplicate custom_id"),
        {**line("wrong-url"), "url": "/v1/embeddings"},
        line("no-messages", messages=[]),
        line("no-agent", model="nobody"),
        line("good-2"),
    )
    batch = client.batches.create(input_file_id=upload(client, content).id, endpoint="/v1/chat/completions", completion_window="24h")
    done = wait_for(lambda: finished(client, batch.id), timeout=60, interval=0.3, message="the batch to end")
    assert done.status == "completed"
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (8, 2, 6)
    outputs = output_records(client, done.output_file_id)
    errors = output_records(client, done.error_file_id)
    assert [r["custom_id"] for r in outputs] == ["good-1", "good-2"]
    by_code = {(r["error"] or {}).get("code") or r["response"]["body"]["error"]["code"]: r for r in errors}
    assert set(by_code) == {
        "invalid_json",
        "missing_custom_id",
        "duplicate_custom_id",
        "mismatched_endpoint",
        "invalid_request",
        "model_not_found",
    }
    assert by_code["invalid_json"]["error"]["line"] == 2
    assert by_code["invalid_request"]["error"]["param"] == "body.messages"
    assert by_code["model_not_found"]["response"]["status_code"] == 404, "admission refused it, as it would a chat request"


def test_a_cancelled_batch_runs_nothing_more(client, stub_llm, settings):
    stub_llm.script(*[Reply(content=f"slow {i}", delay=1.0) for i in range(30)])
    batch = client.batches.create(
        input_file_id=upload(client, jsonl(*[line(f"c{i}") for i in range(30)])).id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
    )
    wait_for(lambda: BatchLine.objects.filter(batch__id=batch.id.removeprefix("batch_"), state="running").exists(), timeout=30)
    assert client.batches.cancel(batch.id).status == "cancelling"
    done = wait_for(lambda: finished(client, batch.id), timeout=60, interval=0.3, message="the batch to be cancelled")
    assert done.status == "cancelled"
    outputs, errors = output_records(client, done.output_file_id), output_records(client, done.error_file_id)
    assert len(outputs) + len(errors) == 30, "every custom_id once, in one file or the other"
    assert sum(1 for r in errors if (r["error"] or {}).get("code") == "batch_cancelled") >= 10
    assert Turn.objects.count() == len(outputs) < 30


def test_another_tenant_sees_none_of_it(client, live, stub_llm):
    import openai

    stub_llm.script(Reply(content="mine"))
    file = upload(client, jsonl(line("x")))
    batch = client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
    bob = make_actor("bob")
    other = openai.OpenAI(base_url=live.api, api_key=bob.key, max_retries=0)
    for call in (
        lambda: other.files.retrieve(file.id),
        lambda: other.files.content(file.id),
        lambda: other.batches.retrieve(batch.id),
        lambda: other.batches.cancel(batch.id),
        lambda: other.files.delete(file.id),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    with pytest.raises(openai.NotFoundError):
        other.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert [b.id for b in other.batches.list()] == []
    wait_for(lambda: finished(client, batch.id), timeout=60, interval=0.3)
    assert Batch.objects.count() == 1


def test_a_batch_of_responses_answers_response_objects(client, stub_llm):
    # Lines run side by side: each is answered by its own text, so results are matched to custom_ids, not to arrival order.
    stub_llm.when("one", lambda body: Reply(content="r1"))
    stub_llm.when("two", lambda body: Reply(content="r2"))
    records = [
        {"custom_id": "a", "method": "POST", "url": "/v1/responses", "body": {"model": "helper", "input": "one"}},
        {
            "custom_id": "b",
            "method": "POST",
            "url": "/v1/responses",
            "body": {"model": "helper", "input": [{"role": "user", "content": "two"}]},
        },
        {
            "custom_id": "c",
            "method": "POST",
            "url": "/v1/responses",
            "body": {"model": "helper", "input": "x", "previous_response_id": "resp_1"},
        },
    ]
    batch = client.batches.create(input_file_id=upload(client, jsonl(*records)).id, endpoint="/v1/responses", completion_window="24h")
    done = wait_for(lambda: finished(client, batch.id), timeout=60, interval=0.3, message="the batch to end")
    outputs = {r["custom_id"]: r["response"]["body"] for r in output_records(client, done.output_file_id)}
    assert {key: body["output_text"] for key, body in outputs.items()} == {"a": "r1", "b": "r2"}
    assert all(body["object"] == "response" and body["status"] == "completed" for body in outputs.values())
    assert [r["custom_id"] for r in output_records(client, done.error_file_id)] == ["c"]
