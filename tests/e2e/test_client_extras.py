"""The README's snippets of Sentinel's extras for the official openai client, run as written.

Every ```python block of the README marked `<!-- tested: NAME -->` runs in a namespace of its own,
after the `client` block (which makes the client and a helper), from a folder whose
var/demo_api_key holds the key of a tenant with an `assistant` agent; only the address changes (the
live server's instead of 127.0.0.1:8000). A snippet checks its own promises with asserts; some
need the model to answer a certain way (a tool call, a slow story), which the stub is told first,
and the test then checks what reached the model and the store.
"""

import contextlib
import io
import re
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest

from agents.models import Approval, ApprovalStatus, Conversation, Message, Turn, TurnStatus
from runs.models import Run
from tests.conftest import make_actor
from tests.stub_llm import Reply

pytestmark = pytest.mark.django_db(transaction=True)

README = Path(__file__).resolve().parents[2] / "README.md"
README_ADDRESS = "http://127.0.0.1:8000"
SNIPPETS = dict(re.findall(r"<!-- tested: (\w+) -->\n```python\n(.*?)```", README.read_text(), flags=re.S))
STORY = " ".join(f"word{i}" for i in range(60))  # streamed word by word, slowly: long enough to interrupt
REFUND = {"id": "call_refund", "type": "function", "function": {"name": "refund", "arguments": '{"order": "42"}'}}


@dataclass
class Outcome:
    ok: bool
    stdout: str
    error: str


def run_snippet(live_stack, folder: Path, name: str) -> Outcome:
    """Run the snippet in this process (a fresh interpreter would spend seconds importing openai)."""
    script = (SNIPPETS["client"] + "\n" + SNIPPETS[name]).replace(README_ADDRESS, live_stack.base_url)
    out = io.StringIO()
    with contextlib.chdir(folder), contextlib.redirect_stdout(out):
        try:
            exec(compile(script, f"README:{name}", "exec"), {"__name__": f"readme_{name}"})
        except Exception:
            return Outcome(False, out.getvalue(), traceback.format_exc())
    return Outcome(True, out.getvalue(), "")


@pytest.fixture
def ada(tmp_path):
    actor = make_actor("ada", role="developer", agent_name="assistant")
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "demo_api_key").write_text(actor.key + "\n")
    return actor


def test_the_readme_has_a_tested_snippet_for_every_extra():
    assert set(SNIPPETS) == {"client", "conversation", "async", "idempotency", "runs", "approvals", "control", "replay"}
    assert all("client." in SNIPPETS[name] for name in SNIPPETS), "each snippet uses the official client"


def ran(live_stack, tmp_path, name: str) -> str:
    done = run_snippet(live_stack, tmp_path, name)
    assert done.ok, f"the {name} snippet failed:\n{SNIPPETS[name]}\n{done.error[-3000:]}"
    return done.stdout


def test_the_conversation_snippet_continues_its_conversation(live_stack, stub_llm, ada, tmp_path):
    ran(live_stack, tmp_path, "conversation")
    assert Conversation.objects.filter(agent=ada.agent).count() == 1
    sent = [m["content"] for m in stub_llm.requests[-1]["messages"] if m["role"] != "system"]
    assert sent[-3:] == ["I am Ada.", "echo: I am Ada.", "Who am I?"], "the server supplied the history"


def test_the_async_snippet_reads_its_turn_when_done(live_stack, stub_llm, ada, tmp_path):
    out = ran(live_stack, tmp_path, "async")
    assert out.startswith("succeeded") and "echo: Hi" in out
    assert Turn.objects.get(agent=ada.agent).status == TurnStatus.SUCCEEDED


def test_the_idempotency_snippet_makes_one_model_call(live_stack, stub_llm, ada, tmp_path):
    ran(live_stack, tmp_path, "idempotency")
    assert len(stub_llm.requests) == 1 and Turn.objects.filter(agent=ada.agent).count() == 1


def test_the_runs_snippet_waits_for_a_parallel_run(live_stack, stub_llm, ada, tmp_path):
    ran(live_stack, tmp_path, "runs")
    run = Run.objects.get(tenant=ada.tenant)
    assert run.pattern == "parallel" and run.status == "succeeded"
    assert len(stub_llm.requests) == 2, "one model call per agent of the run"


def test_the_approvals_snippet_approves_a_held_tool_call(live_stack, stub_llm, ada, tmp_path):
    stub_llm.when("Refund order 42", lambda body: Reply(tool_calls=[REFUND]))
    ran(live_stack, tmp_path, "approvals")
    approval = Approval.objects.get(tenant=ada.tenant)
    assert approval.status == ApprovalStatus.APPROVED and approval.reason == "the customer called"
    assert len(stub_llm.requests) == 1, "the approved call is the answer: the model is not asked again"
    assert run_snippet(live_stack, tmp_path, "approvals").ok, "the snippet runs again once its agent exists"


def test_the_control_snippet_interrupts_resumes_and_cancels(live_stack, stub_llm, ada, tmp_path):
    stub_llm.when("long story", lambda body: Reply(content=STORY, chunk_delay=0.2))
    out = ran(live_stack, tmp_path, "control")
    assert "echo: Make it short." in out, "the resumed turn answered the added input"
    story, other = Turn.objects.filter(agent=ada.agent).order_by("created_at")
    assert story.status == TurnStatus.SUCCEEDED and other.status == TurnStatus.CANCELLED
    assert [m.content for m in Message.objects.filter(turn=story, role="user")] == ["Tell me a long story.", "Make it short."]


def test_the_replay_snippet_replays_and_forks(live_stack, stub_llm, ada, tmp_path):
    ran(live_stack, tmp_path, "replay")
    original, fork = Conversation.objects.filter(agent=ada.agent).order_by("created_at")
    assert fork.metadata["forked_from"]["conversation"] == str(original.id)
    sent = [m["content"] for m in stub_llm.requests[-1]["messages"] if m["role"] != "system"]
    assert sent == ["Remember 7.", "echo: Remember 7.", "What did I ask you to remember?"], "the fork holds the history"
    assert len(stub_llm.requests) == 2, "the replay made no model call"


def test_a_snippet_that_breaks_its_promise_fails(live_stack, stub_llm, ada, tmp_path):
    stub_llm.script(Reply(status=500, error_body={"error": {"message": "down", "type": "server_error"}}))
    done = run_snippet(live_stack, tmp_path, "async")
    assert not done.ok and "TypeError" in done.error, "a failed turn has no response to print: the snippet, and so this suite, fails"
