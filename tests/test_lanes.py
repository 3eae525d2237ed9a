"""The web process's two lanes (sentinel_site.lanes), driven through the real ASGI application."""

import pytest
from asgiref.sync import async_to_sync
from asgiref.testing import ApplicationCommunicator

from sentinel_site.asgi import application


async def get(path: str) -> tuple[int, dict[str, str]]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
    }
    communicator = ApplicationCommunicator(application, scope)
    await communicator.send_input({"type": "http.request", "body": b""})
    start = await communicator.receive_output(10)
    while (await communicator.receive_output(10)).get("more_body"):
        pass
    headers: dict[str, str] = {}
    for name, value in start["headers"]:
        headers.setdefault(name.decode().lower(), value.decode())
    return start["status"], headers


@pytest.mark.django_db(transaction=True)
def test_the_api_lane_keeps_request_ids_and_security_headers_without_browser_middleware():
    status, headers = async_to_sync(get)("/health/live")
    assert status == 200
    assert headers["x-request-id"]
    assert headers["x-content-type-options"] == "nosniff"  # SecurityMiddleware, run on the event loop
    assert "x-frame-options" not in headers, "the clickjacking middleware belongs to the browser lane"
    assert "set-cookie" not in headers


@pytest.mark.django_db(transaction=True)
def test_the_admin_still_goes_through_the_full_stack():
    status, headers = async_to_sync(get)("/admin/login/")
    assert status == 200
    assert headers["x-frame-options"] == "DENY"
    assert "csrftoken=" in headers["set-cookie"]
    assert headers["x-request-id"]
