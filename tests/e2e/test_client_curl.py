"""The README's curl recipes, run as written against a live Sentinel.

Each ```bash block of the README that calls curl runs in bash from a folder whose
var/demo_api_key holds a key of a tenant with an `assistant` agent; only the address changes (the
live server's instead of 127.0.0.1:8000). A shell function in front of curl notes each call's
status on stderr, and the statuses must be the ones the recipes' comments promise.
"""

import re
import subprocess
from pathlib import Path

import pytest

from agents.models import Message, Turn
from tests.conftest import make_actor

pytestmark = pytest.mark.django_db(transaction=True)

README = Path(__file__).resolve().parents[2] / "README.md"
README_ADDRESS = "http://127.0.0.1:8000"
OBSERVE = "curl() { command curl -w '%{stderr}curl-status:%{http_code}\\n' \"$@\"; }\nset -euo pipefail\n"


def curl_recipes() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    return [block for block in blocks if re.search(r"^\s*(\S+=\$\()?curl ", block, flags=re.M)]


def promised_statuses(recipe: str) -> list[int]:
    commands = recipe.replace("\\\n", " ").splitlines()
    return [int(m.group(1)) for line in commands if "curl " in line and (m := re.search(r"#\s*(\d{3})\b", line))]


RECIPES = curl_recipes()


def test_the_readme_has_curl_recipes_that_promise_statuses():
    assert len(RECIPES) >= 3
    assert all(promised_statuses(recipe) for recipe in RECIPES), "every curl recipe says what status it gets"


@pytest.mark.parametrize("recipe", RECIPES, ids=[f"recipe{i}" for i in range(len(RECIPES))])
def test_a_readme_curl_recipe_runs_as_written(live_stack, stub_llm, tmp_path, recipe):
    ada = make_actor("ada", role="developer", agent_name="assistant")
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "demo_api_key").write_text(ada.key + "\n")
    script = OBSERVE + recipe.replace(README_ADDRESS, live_stack.base_url)
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"the recipe failed:\n{recipe}\n{done.stderr[-2000:]}"
    statuses = [int(s) for s in re.findall(r"curl-status:(\d{3})", done.stderr)]
    assert statuses == promised_statuses(recipe), f"the recipe's calls answered {statuses}:\n{done.stdout[-2000:]}"
    if '"stream": true' in recipe:
        assert done.stdout.rstrip().endswith("data: [DONE]")
    if '"conversation"' in recipe:
        conversation = Turn.objects.filter(agent=ada.agent).latest("created_at").conversation_id
        assert Message.objects.filter(conversation_id=conversation).count() == 4, "the second message continued the first's conversation"
    assert "snt_" not in done.stdout, "no answer echoes the key"
