"""deploy/k8s/: every manifest is valid Kubernetes (strict schemas shipped by kubernetes-validate, no
cluster, no download) and says what the deployment needs: one image, probes, drains, budgets, scaling."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

BASE_DIR = Path(__file__).resolve().parent.parent
K8S = BASE_DIR / "deploy" / "k8s"
# The oldest release the manifests use features of (preStop's sleep action), and the newest schema shipped.
VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
NOT_IN_KUSTOMIZATION = {"secret.template.yaml", "migrate-job.yaml"}
DRAIN_SECONDS = 30  # uvicorn's --timeout-graceful-shutdown and `make run`'s wait (sentinel_site.stack)


def documents() -> list[tuple[str, dict]]:
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        found += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def named(kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for _, doc in documents() if doc["kind"] == kind}


def pod(deployment: str) -> dict:
    return named("Deployment")[deployment]["spec"]["template"]["spec"]


def container(deployment: str) -> dict:
    return pod(deployment)["containers"][0]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name,doc", documents(), ids=lambda value: value if isinstance(value, str) else value["kind"])
def test_every_manifest_validates_against_the_kubernetes_schema(name, doc, version):
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        path = ".".join(str(part) for part in error.path)
        pytest.fail(f"{name}: {doc['kind']}/{doc['metadata']['name']} is not valid Kubernetes {version}: {path}: {error.message}")


def test_the_validator_catches_a_misspelt_field():
    doc = {**named("Deployment")["sentinel-web"]}
    doc["spec"] = {**doc["spec"], "replica": 2}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, VERSIONS[-1], strict=True)


def test_the_kustomization_applies_every_manifest_but_the_secret_template_and_the_migration():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files - NOT_IN_KUSTOMIZATION
    assert [image["name"] for image in kustomization["images"]] == ["sentinel"]


def test_web_worker_and_beat_run_the_same_image():
    images = {name: {c["image"] for c in pod(name)["containers"]} for name in named("Deployment")}
    assert images == {name: {"sentinel"} for name in ("sentinel-web", "sentinel-worker", "sentinel-batch-worker", "sentinel-beat")}


def test_the_worker_and_beat_commands_are_the_procfiles():
    procfile = dict(line.split(": ", 1) for line in (BASE_DIR / "Procfile").read_text().splitlines() if line)

    def argv(role: str) -> list[str]:
        words = shlex.split(procfile[role])
        return [word for word in words if not word.startswith("SENTINEL_PROCESS=")]

    def k8s(name: str) -> list[str]:
        return [re.sub(r"\$\((\w+)\)", r"${\1:-16}", word) for word in container(name)["command"]]

    assert k8s("sentinel-worker") == argv("worker")
    # the batches' own worker: niced in the Procfile, its own pods' CPU on Kubernetes
    batch = argv("batch-worker")
    assert batch[:3] == ["nice", "-n", "10"], "the batches' worker yields the cores to real-time turns"
    assert k8s("sentinel-batch-worker")[:-1] == batch[3:-1], "the same worker but for its node name (the pod's, on Kubernetes)"
    assert "batches" not in argv("worker")[argv("worker").index("-Q") + 1].split(","), "batches run on their own workers only"
    assert container("sentinel-beat")["command"][: len(argv("beat"))] == argv("beat")
    for name, role in (
        ("sentinel-web", "web"),
        ("sentinel-worker", "worker"),
        ("sentinel-batch-worker", "worker"),
        ("sentinel-beat", "beat"),
    ):
        assert {"name": "SENTINEL_PROCESS", "value": role} in container(name)["env"], f"{name} says it is a {role} process"


def test_the_web_is_probed_on_health_ready_and_live():
    web = container("sentinel-web")
    assert web["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert web["livenessProbe"]["httpGet"]["path"] == "/health/live"
    allowed = named("ConfigMap")["sentinel-config"]["data"]["SENTINEL_ALLOWED_HOSTS"].split(",")
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        [host] = [h["value"] for h in web[probe]["httpGet"]["httpHeaders"] if h["name"] == "Host"]
        assert host in allowed, f"the {probe}'s Host header must be an allowed host, or Django answers 400"


def test_termination_leaves_time_for_the_30_second_drain():
    web = pod("sentinel-web")
    pre_stop = web["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert web["terminationGracePeriodSeconds"] > pre_stop + DRAIN_SECONDS
    assert pod("sentinel-worker")["terminationGracePeriodSeconds"] > DRAIN_SECONDS


def test_every_container_requests_cpu_and_memory_and_runs_unprivileged():
    for _, doc in documents():
        if doc["kind"] not in ("Deployment", "Job"):
            continue
        spec = doc["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] and spec["securityContext"]["runAsUser"] != 0
        for c in spec["containers"]:
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]), f"{doc['metadata']['name']}/{c['name']} requests cpu and memory"
            assert "memory" in c["resources"]["limits"]
            assert c["securityContext"]["allowPrivilegeEscalation"] is False


def test_the_service_and_the_disruption_budgets_select_real_pods():
    labels = {name: named("Deployment")[name]["spec"]["template"]["metadata"]["labels"] for name in named("Deployment")}

    def selects(selector: dict) -> set[str]:
        return {name for name, pod_labels in labels.items() if selector.items() <= pod_labels.items()}

    assert selects(named("Service")["sentinel-web"]["spec"]["selector"]) == {"sentinel-web"}
    ports = {p["name"] for p in container("sentinel-web")["ports"]}
    assert named("Service")["sentinel-web"]["spec"]["ports"][0]["targetPort"] in ports
    budgets = named("PodDisruptionBudget")
    assert {name for budget in budgets.values() for name in selects(budget["spec"]["selector"]["matchLabels"])} == set(labels)


def test_the_workers_scale_on_queue_depth():
    hpa = named("HorizontalPodAutoscaler")["sentinel-worker"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "sentinel-worker"
    external = [m["external"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "External"]
    assert external == ["sentinel_queued_turns"]
    assert "sentinel_queued_turns" in (BASE_DIR / "README.md").read_text(), "a metric Sentinel exports"


def test_every_configured_variable_is_in_the_readme_configuration_table():
    readme = (BASE_DIR / "README.md").read_text()
    first_cells = re.findall(r"^\| (`[A-Z][^|]*)\|", readme, flags=re.MULTILINE)
    documented = {name for cell in first_cells for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", cell)}
    keys = set(named("ConfigMap")["sentinel-config"]["data"]) | set(named("Secret")["sentinel-secrets"]["stringData"])
    assert keys - documented == set(), "every variable the manifests set is documented"
