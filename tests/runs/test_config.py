"""Declarative config: `manage.py config validate|explain|apply`, errors with file, line and key, an
idempotent audited apply, declared workflows run by name, and the reloader (beat) on a changed file."""

import textwrap
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from agents.models import Agent
from budgets.models import AuditEntry, Tenant
from runs import config
from runs.models import Run, Workflow
from runs.tasks import reload_config
from sentinel_site.health import CONFIG_STATUS_KEY
from sentinel_site.redis import sync_client
from tests.runs.conftest import system_prompt

pytestmark = pytest.mark.django_db

GOOD = textwrap.dedent(
    """\
    tenant = "acme"

    [agents.researcher]
    system_prompt = "You research."
    specialization = "research"
    default_params = { temperature = 0.2 }

    [agents.writer]
    system_prompt = \"\"\"You write.
    Briefly.\"\"\"

    [workflows.answer]
    timeout_seconds = 120

    [[workflows.answer.steps]]
    id = "draft"
    kind = "agent"
    agent = "researcher"

    [[workflows.answer.steps]]
    id = "polish"
    kind = "agent"
    agent = "writer"
    depends_on = ["draft"]
    template = "Polish: {{steps.draft.output}}"
    """
)

BAD = textwrap.dedent(
    """\
    tenant = "acme"

    [agents.researcher]
    system_prompt = "You research."
    context_budget = 10

    [workflows.loop]
    [[workflows.loop.steps]]
    id = "a"
    kind = "transform"
    template = "{{steps.b.output}}"
    depends_on = ["b"]

    [[workflows.loop.steps]]
    id = "b"
    kind = "agent"
    agent = "ghost"
    depends_on = ["a"]
    """
)


@pytest.fixture(autouse=True)
def _no_reload_status():
    yield
    sync_client().delete(CONFIG_STATUS_KEY)  # /health reads it: leave nothing for other tests


def write(tmp_path, text, name="sentinel.toml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_validate_names_every_error_with_its_line_and_key(tmp_path):
    path = write(tmp_path, BAD)
    err = StringIO()
    with pytest.raises(CommandError, match="3 error"):
        call_command("config", "validate", path, stderr=err)
    lines = err.getvalue().splitlines()
    assert f"{path}:5: agents.researcher.context_budget: must be between 256 and 1000000" in lines
    assert f"{path}:17: workflows.loop.steps[1].agent: step `b`: unknown agent `ghost`" in lines, lines
    cycle = next(line for line in lines if "cycle" in line)
    assert cycle.startswith(f"{path}:12: workflows.loop.steps[0].depends_on: step `a`: the workflow has a cycle (a -> b -> a)"), cycle


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('tenant = "acme"\ncolour = "blue"\n', ":2: colour: unknown key"),
        ('[agents.x]\nmodel = "m"\n', ":1: tenant: required"),
        ('tenant = "acme"\n[agents.x]\nprovider_api_key = "sk-secret"\n', ":3: agents.x.provider_api_key: unknown agent field"),
        ('tenant = "acme"\n[agents.x]\nsystem_prompt = 3\n', ":3: agents.x.system_prompt: must be a string"),
        ('tenant = "acme"\n[agents.x]\ndefault_params = { temperature = 9 }\n', ":3: agents.x.default_params.temperature:"),
        ('tenant = "acme"\n[workflows.w]\n[[workflows.w.steps]]\nid = "s"\nkind = "dance"\n', ":5: workflows.w.steps[0].kind:"),
        ('tenant = "acme"\n[agents.x\n', ":2: -: not valid TOML"),
    ],
)
def test_each_kind_of_error_is_placed(tmp_path, text, expected):
    loaded = config.load(write(tmp_path, text))
    assert any(expected in str(error) for error in loaded.errors), [str(e) for e in loaded.errors]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('tenant = ["acme", "globex"]\n', ":1: tenant: must be one tenant's name: a file configures one tenant"),
        ('[tenants.acme.agents.x]\nmodel = "m"\n', ":1: tenants: unknown key: a file configures one tenant"),
        ('tenant = "acme"\n[globex.agents.x]\nmodel = "m"\n', ":2: globex: unknown key: a file configures one tenant"),
        ('tenant = "acme"\n[agents.x]\ntenant = "globex"\n', ":3: agents.x.tenant: an agent belongs to the file's tenant"),
    ],
)
def test_a_file_configures_one_tenant_and_says_so(tmp_path, text, expected):
    loaded = config.load(write(tmp_path, text))
    assert any(expected in str(error) for error in loaded.errors), [str(e) for e in loaded.errors]
    assert not Tenant.objects.filter(name="globex").exists()


def test_explain_says_what_would_change_and_changes_nothing(tmp_path):
    out = StringIO()
    call_command("config", "explain", write(tmp_path, GOOD), stdout=out)
    assert "agent researcher: created" in out.getvalue() and "workflow answer: created" in out.getvalue()
    assert not Agent.objects.filter(name="researcher").exists() and not Workflow.objects.exists()


def test_apply_is_idempotent_and_audited(tmp_path):
    path = write(tmp_path, GOOD)
    call_command("config", "apply", path, stdout=StringIO())
    tenant = Tenant.objects.get(name="acme")
    researcher = Agent.objects.get(tenant=tenant, name="researcher")
    assert researcher.specialization == "research" and researcher.default_params == {"temperature": 0.2}
    assert Agent.objects.get(tenant=tenant, name="writer").system_prompt == "You write.\nBriefly."
    assert [s["id"] for s in Workflow.objects.get(tenant=tenant, name="answer").definition["steps"]] == ["draft", "polish"]
    again = StringIO()
    call_command("config", "apply", path, stdout=again)
    assert "agent researcher: unchanged" in again.getvalue() and "workflow answer: unchanged" in again.getvalue()
    assert AuditEntry.objects.filter(action="config.applied").count() == 1, "a second apply changed nothing, so audited nothing"
    write(tmp_path, GOOD.replace("You research.", "You research carefully."))
    out = StringIO()
    call_command("config", "apply", path, stdout=out)
    assert "agent researcher: updated (system_prompt)" in out.getvalue()


def test_an_invalid_file_changes_nothing(tmp_path):
    with pytest.raises(CommandError):
        call_command("config", "apply", write(tmp_path, BAD), stderr=StringIO())
    assert not Tenant.objects.filter(name="acme").exists()


def test_a_declared_workflow_runs_by_name_and_an_unknown_one_is_a_404(tmp_path, settings):
    call_command("config", "apply", write(tmp_path, GOOD), stdout=StringIO())
    from budgets.models import ApiKey

    _, key = ApiKey.issue(Tenant.objects.get(name="acme"), role="executor", name="k")
    auth = {"HTTP_AUTHORIZATION": f"Bearer {key}", "content_type": "application/json"}
    response = Client().post("/v1/runs", {"pattern": "workflow", "input": "q", "workflow": "answer"}, **auth)
    assert response.status_code == 202, response.content
    run = Run.objects.get(id=response.json()["id"])
    assert [s.key for s in run.steps.order_by("position")] == ["draft", "polish"] and run.timeout_seconds == 120
    assert run.request["workflow"] == "answer", "a re-run takes the workflow as it is declared then"
    missing = Client().post("/v1/runs", {"pattern": "workflow", "input": "q", "workflow": "nope"}, **auth)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "workflow_not_found"


def test_the_reloader_applies_a_changed_file_and_refuses_an_invalid_one_keeping_the_old(tmp_path, settings):
    path = write(tmp_path, GOOD)
    settings.SENTINEL = {**settings.SENTINEL, "CONFIG_FILE": path}
    assert reload_config() == "applied"
    assert reload_config() == "unchanged"
    write(tmp_path, GOOD.replace("You research.", "You dig deep."))
    assert reload_config() == "applied"
    assert Agent.objects.get(name="researcher").system_prompt == "You dig deep."
    write(tmp_path, BAD)
    assert reload_config() == "refused"
    assert reload_config() == "unchanged", "a refused file is not re-validated until it changes"
    assert Agent.objects.get(name="researcher").system_prompt == "You dig deep.", "the config applied before stays"
    health = Client().get("/health").json()
    assert health["status"] == "healthy" and any("unknown agent `ghost`" in line for line in health["config"]["error"])
    write(tmp_path, GOOD)
    assert reload_config() == "applied" and Client().get("/health").json()["config"]["error"] is None


def test_the_file_schema_is_published(client):
    schema = client.get("/v1/config/schema").json()
    assert schema["$schema"].startswith("https://json-schema.org/") and schema["required"] == ["tenant"]
    assert set(schema["properties"]["agents"]["additionalProperties"]["properties"]) == set(config.AGENT_FIELDS)
    step = schema["properties"]["workflows"]["additionalProperties"]["properties"]["steps"]["items"]
    assert step["properties"]["kind"]["enum"] == ["agent", "llm", "embed", "vector_search", "transform"]


@pytest.mark.django_db(transaction=True)
def test_editing_the_file_changes_an_agents_prompt_on_the_running_stack(live, stub_llm, tmp_path, settings):
    import httpx

    from budgets.models import ApiKey

    path = write(tmp_path, GOOD)
    settings.SENTINEL = {**settings.SENTINEL, "CONFIG_FILE": path}
    assert reload_config() == "applied"  # what beat runs every few seconds
    _, key = ApiKey.issue(Tenant.objects.get(name="acme"), role="executor", name="k")

    def ask() -> str:
        body = {"model": "researcher", "messages": [{"role": "user", "content": "hi"}]}
        response = httpx.post(f"{live.api}/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        assert response.status_code == 200, response.text
        return system_prompt(stub_llm.requests[-1])

    assert ask() == "You research."
    write(tmp_path, GOOD.replace("You research.", "You research, citing sources."))
    assert reload_config() == "applied"
    assert ask() == "You research, citing sources.", "the web and the worker took the new prompt without a restart"
