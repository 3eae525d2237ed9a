"""/v1/files: upload, read, content, delete, limits, and another tenant's ids."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from batches.models import File
from tests.batches.conftest import jsonl, line

pytestmark = pytest.mark.django_db


def post_file(actor, content: bytes, purpose: str = "batch", name: str = "in.jsonl"):
    return Client().post("/v1/files", {"file": SimpleUploadedFile(name, content), "purpose": purpose}, **actor.auth)


def test_it_stores_a_batch_file_and_gives_it_back(alice):
    content = jsonl(line("a"), line("b"))
    created = post_file(alice, content)
    assert created.status_code == 200, created.content
    body = created.json()
    assert body["object"] == "file" and body["bytes"] == len(content) and body["filename"] == "in.jsonl"
    assert Client().get(f"/v1/files/{body['id']}", **alice.auth).json()["id"] == body["id"]
    assert Client().get(f"/v1/files/{body['id']}/content", **alice.auth).content == content
    listed = Client().get("/v1/files", **alice.auth).json()
    assert [f["id"] for f in listed["data"]] == [body["id"]] and listed["has_more"] is False
    deleted = Client().delete(f"/v1/files/{body['id']}", **alice.auth).json()
    assert deleted == {"id": body["id"], "object": "file", "deleted": True}
    assert not File.objects.exists()


def test_it_refuses_other_purposes_big_files_and_too_many_lines(alice, settings):
    assert post_file(alice, jsonl(line("a")), purpose="fine-tune").json()["error"]["param"] == "purpose"
    settings.SENTINEL = {**settings.SENTINEL, "FILE_MAX_BYTES": 1024, "BATCH_MAX_LINES": 2}
    too_big = post_file(alice, b"x" * 2048)
    assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "file_too_large"
    too_long = post_file(alice, jsonl(line("a"), line("b"), line("c")))
    assert too_long.status_code == 400 and too_long.json()["error"]["code"] == "too_many_lines"
    not_text = post_file(alice, b"\xff\xfe\x00")
    assert not_text.status_code == 400 and not_text.json()["error"]["code"] == "invalid_file"
    assert not File.objects.exists(), "a refused upload writes nothing"


def test_another_tenants_file_is_not_found(alice, bob):
    file_id = post_file(alice, jsonl(line("a"))).json()["id"]
    for method, path in (("get", f"/v1/files/{file_id}"), ("get", f"/v1/files/{file_id}/content"), ("delete", f"/v1/files/{file_id}")):
        assert getattr(Client(), method)(path, **bob.auth).status_code == 404
    assert Client().get("/v1/files/not-an-id", **alice.auth).status_code == 404
    assert Client().get("/v1/files", **bob.auth).json()["data"] == []
    assert File.objects.count() == 1


def test_a_batch_needs_a_known_batch_file_and_a_supported_endpoint(alice, bob):
    file_id = post_file(alice, jsonl(line("a"))).json()["id"]
    body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    post = lambda actor, data: Client().post("/v1/batches", data, content_type="application/json", **actor.auth)  # noqa: E731
    assert post(bob, body).status_code == 404
    assert post(alice, {**body, "endpoint": "/v1/embeddings"}).json()["error"]["param"] == "endpoint"
    assert post(alice, {**body, "completion_window": "1h"}).json()["error"]["param"] == "completion_window"
    assert post(alice, {**body, "metadata": {"k": 1}}).json()["error"]["param"] == "metadata"
    from batches.models import Batch

    assert not Batch.objects.exists()
