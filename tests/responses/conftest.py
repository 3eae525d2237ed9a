import openai
import pytest

from tests.conftest import wait_for
from tests.e2e.conftest import worker_is_idle


@pytest.fixture
def live(db, live_stack):
    yield live_stack
    wait_for(worker_is_idle, timeout=60, message="the worker to go idle")


@pytest.fixture
def client(live, alice):
    return openai.OpenAI(base_url=live.api, api_key=alice.key, max_retries=0, timeout=30)
