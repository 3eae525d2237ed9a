import pytest

from routing import selection
from sentinel_site.redis import sync_client
from tests.stub_llm import StubLLM


@pytest.fixture
def second_llm():
    """Another stub model server: a second deployment on its own port."""
    stub = StubLLM().start()
    yield stub
    stub.stop()


@pytest.fixture(autouse=True)
def _fresh_routing_state(settings):
    """No routed call counted, in flight or measured before the test; every decision reads Redis
    (other workers' changes seen at once) except in the tests of the snapshot."""
    client = sync_client()
    for key in client.scan_iter("sentinel:rt:*"):
        client.delete(key)
    selection.forget()
    settings.SENTINEL = {**settings.SENTINEL, "ROUTING_STATE_SECONDS": 0}
