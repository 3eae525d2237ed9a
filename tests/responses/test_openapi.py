"""Every route of OpenAI's other interfaces (files and batches, responses, conversation items, webhooks)
and of the conversation resource is in the OpenAPI document, with every method its view answers."""

import re

import pytest
import yaml
from django.test import Client

from batches.api import urls as batches_urls
from responses.api import urls as responses_urls
from webhooks.api import urls as webhooks_urls

METHODS = ("get", "post", "put", "patch", "delete")


def documented() -> dict[str, set[str]]:
    paths = yaml.safe_load(Client().get("/api/schema/").content)["paths"]
    return {path: {method for method in operations if method in METHODS} for path, operations in paths.items()}


def routes() -> list[tuple[str, set[str]]]:
    """Each route as the document names it (`/v1/files/{file_id}`), with the methods its view implements."""
    found = []
    for module in (batches_urls, responses_urls, webhooks_urls):
        for pattern in module.urlpatterns:
            path = "/v1/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", str(pattern.pattern))
            view = pattern.callback.view_class
            found.append((path, {method for method in METHODS if hasattr(view, method)}))
    return found


@pytest.mark.django_db
def test_every_interface_route_and_method_is_in_the_openapi_document():
    paths = documented()
    listed = routes()
    assert len(listed) >= 20, "the interfaces' URL modules were read"
    for path, methods in listed:
        assert path in paths, f"{path} is missing from the OpenAPI document"
        assert methods <= paths[path], f"{path}: {sorted(methods - paths[path])} undocumented"


@pytest.mark.django_db
def test_the_conversation_resource_documents_openais_update_and_delete():
    paths = documented()
    assert paths["/v1/conversations/{id}"] == {"get", "post", "delete"}
    assert paths["/v1/conversations/{conversation_id}/items"] == {"get", "post"}
    assert paths["/v1/conversations/{conversation_id}/items/{item_id}"] == {"get", "delete"}
