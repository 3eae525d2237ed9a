"""The Dockerfile builds one image for every role (Docker is not needed to read it): what goes in,
what stays out, and the user the Kubernetes manifests expect."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import yaml

from sentinel_site.stack import web_command

BASE_DIR = Path(__file__).resolve().parent.parent
DOCKERFILE = (BASE_DIR / "Dockerfile").read_text()


def instructions(name: str) -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    return [line.split(None, 1)[1] for line in joined.splitlines() if line.startswith(f"{name} ")]


def test_it_is_one_image():
    assert len(instructions("FROM")) == 1, "one stage: web, worker, beat and the migration run the same image"


def test_the_development_data_and_virtualenv_stay_out_of_it():
    ignored = {line.strip() for line in (BASE_DIR / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")}
    assert {".venv", "var", ".env"} <= ignored, "var/ holds the development database, secret key and demo credentials"


def test_it_carries_the_default_embedder_built_in():
    [install] = [run for run in instructions("RUN") if "pip install" in run]
    assert "requirements.txt" in install and "requirements-embeddings.txt" in install
    assert any("build_embedder --model onnx" in run for run in instructions("RUN")), "no process builds the model at run time"


def test_it_runs_as_the_user_the_manifests_expect():
    [user] = instructions("USER")
    pods = [doc for path in (BASE_DIR / "deploy" / "k8s").glob("*.yaml") for doc in yaml.safe_load_all(path.read_text()) if doc]
    users = {doc["spec"]["template"]["spec"]["securityContext"]["runAsUser"] for doc in pods if doc["kind"] in ("Deployment", "Job")}
    assert users == {int(user)}


def test_compose_builds_every_service_of_sentinel_from_it():
    compose = yaml.safe_load((BASE_DIR / "docker-compose.yml").read_text())
    ours = {name: service for name, service in compose["services"].items() if "image" not in service}
    assert set(ours) == {"migrate", "web", "worker", "batch-worker", "beat"}
    assert all(service["build"] == "." for service in ours.values())


def test_the_image_the_procfile_and_make_run_start_the_same_web_server():
    image = json.loads(DOCKERFILE.split("CMD ", 1)[1].splitlines()[0])[3:]
    procfile = next(line for line in (BASE_DIR / "Procfile").read_text().splitlines() if line.startswith("web: "))
    procfile_argv = [word for word in shlex.split(procfile[5:]) if not word.startswith("SENTINEL_PROCESS=")][3:]
    ours = web_command("0.0.0.0", 8000)[3:]
    for argv in (image, procfile_argv):
        options = {word: argv[i + 1] for i, word in enumerate(argv) if word.startswith("--") and i + 1 < len(argv)}
        assert options.get("--timeout-keep-alive") == ours[ours.index("--timeout-keep-alive") + 1], (
            "idle keep-alive connections outlive a load balancer's idle timeout wherever the web runs"
        )
        assert options.get("--timeout-graceful-shutdown") == ours[ours.index("--timeout-graceful-shutdown") + 1]
