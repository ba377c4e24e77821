"""deploy/kubernetes/: the manifests against the Kubernetes, KEDA and Prometheus operator schemas
(offline, tests/support/kubernetes_models.py), and what they must agree on with the image and each other."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tests.support import ROOT, kubernetes_models

MANIFESTS = ROOT / "deploy" / "kubernetes"


@pytest.fixture(scope="module", autouse=True)
def validators() -> None:
    why_not = kubernetes_models.missing_tools()
    if why_not is not None:
        pytest.skip(why_not)
    kubernetes_models.install()


def documents() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    found = []
    for name in kustomization["resources"]:
        found += [d for d in yaml.safe_load_all((MANIFESTS / name).read_text()) if d]
    return found


def the(kind: str, docs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    (found,) = [d for d in docs or documents() if d["kind"] == kind]
    return found


def test_every_manifest_is_listed_and_valid() -> None:
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    assert set(kustomization["resources"]) == {p.name for p in MANIFESTS.glob("*.yaml")} - {
        "kustomization.yaml"
    }
    docs = documents()
    results = kubernetes_models.validate(docs)
    assert [r["error"] for r in results] == [None] * len(docs), results
    kinds = {r["kind"] for r in results}
    assert {"Deployment", "ServiceAccount", "ScaledObject", "TriggerAuthentication", "PodMonitor"} <= kinds
    (image,) = kustomization["images"]
    assert the("Deployment", docs)["spec"]["template"]["spec"]["containers"][0]["image"] == image["name"]


def test_the_schemas_are_not_a_rubber_stamp() -> None:
    deployment, scaled = the("Deployment"), the("ScaledObject")
    deployment["spec"]["replicas"] = "two"
    scaled["spec"]["minReplicaCount"] = "none"
    del scaled["spec"]["scaleTargetRef"]
    unknown = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledWhatever", "metadata": {"name": "x"}}
    results = kubernetes_models.validate([deployment, scaled, unknown])
    assert "replicas" in results[0]["error"]
    assert "minReplicaCount" in results[1]["error"] and "scaleTargetRef" in results[1]["error"]
    assert "no kind ScaledWhatever" in results[2]["error"]


def test_the_deployment_runs_the_image_as_built() -> None:
    pod = the("Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert "command" not in container and "args" not in container  # the image's ENTRYPOINT: replayer run
    env = {e["name"]: e["value"] for e in container["env"]}
    assert {"REPLAYER_QUEUE", "REPLAYER_TO", "REPLAYER_ALLOW_STREAMS", "REPLAYER_QUARANTINE"} <= set(env)
    # SIGKILL comes after terminationGracePeriodSeconds: the grace plus time to let go and exit.
    assert pod["terminationGracePeriodSeconds"] >= int(env["REPLAYER_GRACE_SECONDS"]) + 10
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == int(env["REPLAYER_HTTP_PORT"])
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"]) and "memory" in resources["limits"]


def test_the_pods_run_as_the_images_non_root_user() -> None:
    pod = the("Deployment")["spec"]["template"]["spec"]
    dockerfile_user = re.findall(r"^USER (\d+)", (ROOT / "Dockerfile").read_text(), flags=re.M)[-1]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == int(dockerfile_user)
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    context = pod["containers"][0]["securityContext"]
    assert context["allowPrivilegeEscalation"] is False and context["readOnlyRootFilesystem"] is True
    assert context["capabilities"]["drop"] == ["ALL"]


def test_the_service_account_carries_the_aws_role() -> None:
    docs = documents()
    account = the("ServiceAccount", docs)
    assert (
        the("Deployment", docs)["spec"]["template"]["spec"]["serviceAccountName"]
        == account["metadata"]["name"]
    )
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")


def test_metrics_are_scraped_from_the_http_port() -> None:
    docs = documents()
    template = the("Deployment", docs)["spec"]["template"]
    ports = {p["name"]: p["containerPort"] for p in template["spec"]["containers"][0]["ports"]}
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert (
        int(annotations["prometheus.io/port"]) == ports["http"]
        and annotations["prometheus.io/path"] == "/metrics"
    )
    monitor = the("PodMonitor", docs)["spec"]
    assert monitor["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    (endpoint,) = monitor["podMetricsEndpoints"]
    assert endpoint["port"] in ports and endpoint["path"] == "/metrics"


def test_keda_scales_the_deployment_on_the_failure_queue() -> None:
    docs = documents()
    deployment, scaled = the("Deployment", docs), the("ScaledObject", docs)["spec"]
    env = {e["name"]: e["value"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert scaled["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert scaled["minReplicaCount"] == 0 and scaled["maxReplicaCount"] >= 1
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "aws-sqs-queue"
    assert trigger["metadata"]["queueURL"] == env["REPLAYER_QUEUE"]
    assert trigger["metadata"]["awsRegion"] == env["AWS_REGION"]
    assert int(trigger["metadata"]["queueLength"]) >= 1
    authentication = the("TriggerAuthentication", docs)
    assert trigger["authenticationRef"]["name"] == authentication["metadata"]["name"]
    assert authentication["spec"]["podIdentity"]["provider"] == "aws"


def test_manifests_parse_as_yaml_streams() -> None:
    # kubectl reads every file as a stream of documents: no stray tabs or duplicate keys.
    for path in MANIFESTS.glob("*.yaml"):
        text = path.read_text()
        assert "\t" not in text, path.name
        for doc in yaml.compose_all(text):
            if doc is not None:
                keys = [k.value for k, _ in doc.value]
                assert len(keys) == len(set(keys)), path.name
