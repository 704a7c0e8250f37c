"""deploy/kubernetes, as kustomize renders it: the base and the production overlay.

`kubectl kustomize` renders each (the machine's kubectl, or Debian's kubernetes-client installed when
there is none); kubernetes-validate checks every rendered object against the API schema of a pinned
Kubernetes version, strictly (an unknown field fails); the policy tests check what the schema can't:
limits, probes, non-root read-only pods, one beat, autoscalers, budgets and network policies that
point at pods that exist, Secret references that the template provides.
"""

from __future__ import annotations

import copy
import functools
import ipaddress
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped] # no type hints
import pytest
import yaml

from apps.ops.beat import HEARTBEAT_ACTIVE, HEARTBEAT_STANDBY, beat_heartbeat_path
from tests.deploy.test_deploy_files import (
    COMMANDS,
    CONTAINER_TMP,
    METRICS_DIR,
    HealthServer,
    dockerfile_values,
    probe_script,
    run_probe,
    services,
)
from tests.support.debian import debian_command_ensure

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
BASE = KUBERNETES / "base"
PRODUCTION = KUBERNETES / "overlays" / "production"
SECRET_TEMPLATE = BASE / "secret.yaml.template"
# The API version the objects are checked against (kubernetes-validate ships the schemas).
KUBERNETES_VERSION = "1.33.0"
NAMESPACE = "cognitionos"  # the production overlay's
REQUIRED_SECRETS = {"SECRET_KEY", "DATABASE_URL", "REDIS_URL", "CREDENTIALS_ENCRYPTION_KEYS", "METRICS_TOKEN"}
OPTIONAL_SECRETS = {
    "CELERY_BROKER_URL",
    "API_KEY_HASH_KEY",
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "OPENAI_COMPATIBLE_API_KEY",
    "STRIPE_SECRET_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "EMAIL_HOST_PASSWORD",
}
RENDERS = {"base": BASE, "production": PRODUCTION}
EXPECTED = {
    ("ConfigMap", "cognitionos"),
    ("Job", "cognitionos-migrate"),
    ("Deployment", "cognitionos-web"),
    ("Service", "cognitionos-web"),
    ("Deployment", "cognitionos-worker"),
    ("Deployment", "cognitionos-beat"),
    ("HorizontalPodAutoscaler", "cognitionos-web"),
    ("HorizontalPodAutoscaler", "cognitionos-worker"),
    ("PodDisruptionBudget", "cognitionos-web"),
    ("PodDisruptionBudget", "cognitionos-worker"),
    ("Ingress", "cognitionos"),
    ("NetworkPolicy", "cognitionos-default-deny"),
    ("NetworkPolicy", "cognitionos-dns"),
    ("NetworkPolicy", "cognitionos-datastores"),
    ("NetworkPolicy", "cognitionos-otlp"),
    ("NetworkPolicy", "cognitionos-web-ingress"),
    ("NetworkPolicy", "cognitionos-worker-metrics"),
    ("NetworkPolicy", "cognitionos-egress-internet"),
}
# kustomize v2.0's fields (Debian 12's kubectl 1.20 has no newer one); kustomize 5 still reads them.
KUSTOMIZE_V2_FIELDS = {
    "apiVersion",
    "kind",
    "namespace",
    "bases",
    "resources",
    "images",
    "patchesStrategicMerge",
    "patchesJson6902",
    "configMapGenerator",
    "secretGenerator",
    "generatorOptions",
    "commonAnnotations",
}
PRIVATE_NETWORKS = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16")


# --- rendering ----------------------------------------------------------------------------------


@functools.cache
def kubectl() -> str:
    path = debian_command_ensure("kubectl", "kubernetes-client")
    probe = subprocess.run([path, "kustomize", "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert probe.returncode == 0, f"{path} has no `kustomize`: {probe.stderr}"
    return path


@functools.cache
def _render(name: str) -> tuple[dict[str, Any], ...]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(RENDERS[name])], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def render(name: str) -> list[dict[str, Any]]:
    """The objects `kubectl kustomize` renders for base or production (copies: tests may mutate)."""
    return copy.deepcopy(list(_render(name)))


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [doc for doc in docs if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def workloads(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] in {"Deployment", "Job"}]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def pod_labels(docs: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [workload["spec"]["template"]["metadata"]["labels"] for workload in workloads(docs)]


def containers(docs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(workload, container) for workload in workloads(docs) for container in pod_spec(workload)["containers"]]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Kubernetes' label selector semantics (matchLabels and matchExpressions); {} selects all."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def selected(docs: list[dict[str, Any]], selector: dict[str, Any]) -> list[str]:
    """The components of the pods a selector picks."""
    return sorted(labels["app.kubernetes.io/component"] for labels in pod_labels(docs) if selects(selector, labels))


def secret_template() -> dict[str, Any]:
    documents = [doc for doc in yaml.safe_load_all(SECRET_TEMPLATE.read_text()) if doc]
    assert len(documents) == 1
    template: dict[str, Any] = documents[0]
    return template


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container.get("env", []) if "value" in item}


renders = pytest.mark.parametrize("name", sorted(RENDERS))


# --- rendering and schema -----------------------------------------------------------------------


@renders
def test_kustomize_renders_every_object(name: str) -> None:
    docs = render(name)
    kinds = {(doc["kind"], doc["metadata"]["name"]) for doc in docs}
    if name == "base":
        assert kinds == EXPECTED
        assert all("namespace" not in doc["metadata"] for doc in docs)
    else:
        assert kinds == EXPECTED | {("Namespace", NAMESPACE)}
        assert all(doc["metadata"].get("namespace") == NAMESPACE for doc in docs if doc["kind"] != "Namespace")


@renders
def test_every_rendered_object_is_valid_for_the_pinned_kubernetes_version(name: str) -> None:
    for doc in render(name):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_schema_check_rejects_a_misspelt_field_and_a_wrong_type() -> None:
    web = find(render("base"), "Deployment", "cognitionos-web")
    misspelt = copy.deepcopy(web)
    misspelt["spec"]["revisionHistory"] = misspelt["spec"].pop("revisionHistoryLimit")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(misspelt, KUBERNETES_VERSION, strict=True)
    wrong_type = copy.deepcopy(web)
    pod_spec(wrong_type)["containers"][0]["ports"][0]["containerPort"] = "eight thousand"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong_type, KUBERNETES_VERSION, strict=True)


def test_kustomizations_use_only_fields_every_kubectl_renders() -> None:
    for path in (BASE / "kustomization.yaml", PRODUCTION / "kustomization.yaml"):
        fields = set(yaml.safe_load(path.read_text()))
        assert fields <= KUSTOMIZE_V2_FIELDS, (path, fields - KUSTOMIZE_V2_FIELDS)
    # kustomize v2.0 reads folders only under `bases`.
    production = yaml.safe_load((PRODUCTION / "kustomization.yaml").read_text())
    assert all((PRODUCTION / resource).is_file() for resource in production["resources"])
    assert all((PRODUCTION / base).is_dir() for base in production["bases"])


# --- workloads ----------------------------------------------------------------------------------


@renders
def test_workloads_run_each_process_with_its_command_and_one_image(name: str) -> None:
    docs = render(name)
    for process, command in COMMANDS.items():
        kind = "Job" if process == "migrate" else "Deployment"
        (container,) = pod_spec(find(docs, kind, f"cognitionos-{process}"))["containers"]
        assert container["command"] == command, process
    assert len({container["image"] for _, container in containers(docs)}) == 1


def test_production_runs_the_image_its_overlay_names() -> None:
    (image,) = yaml.safe_load((PRODUCTION / "kustomization.yaml").read_text())["images"]
    expected = f"{image['newName']}:{image['newTag']}"
    assert {container["image"] for _, container in containers(render("production"))} == {expected}


@renders
def test_every_container_has_cpu_and_memory_requests_and_limits(name: str) -> None:
    for workload, container in containers(render(name)):
        resources = container["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]), workload["metadata"]["name"]
        assert {"cpu", "memory"} <= set(resources["limits"]), workload["metadata"]["name"]


@renders
def test_long_running_containers_have_liveness_and_readiness_probes_and_the_job_none(name: str) -> None:
    for workload, container in containers(render(name)):
        if workload["kind"] == "Deployment":
            assert "livenessProbe" in container and "readinessProbe" in container, workload["metadata"]["name"]
        else:
            assert not {"livenessProbe", "readinessProbe", "startupProbe"} & set(container)


@renders
def test_every_pod_runs_as_the_image_user_read_only_without_capabilities(name: str) -> None:
    uid = int(dockerfile_values("USER")[-1].split(":")[0])
    for workload, container in containers(render(name)):
        label = workload["metadata"]["name"]
        spec = pod_spec(workload)
        assert spec["automountServiceAccountToken"] is False, label
        assert spec["securityContext"]["runAsNonRoot"] is True, label
        assert spec["securityContext"]["runAsUser"] == uid != 0, label
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, label
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True, label
        assert context["allowPrivilegeEscalation"] is False, label
        assert context["capabilities"] == {"drop": ["ALL"]}, label
        assert "privileged" not in context and "runAsUser" not in context, label


@renders
def test_every_pod_writes_only_to_emptydirs_at_tmp_and_the_metrics_directory(name: str) -> None:
    docs = render(name)
    config = find(docs, "ConfigMap", "cognitionos")["data"]
    assert config["PROMETHEUS_MULTIPROC_DIR"] == METRICS_DIR
    assert f"PROMETHEUS_MULTIPROC_DIR={METRICS_DIR}" in " ".join(dockerfile_values("ENV"))
    for workload, container in containers(docs):
        volumes = {volume["name"]: volume for volume in pod_spec(workload)["volumes"]}
        mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
        assert set(mounts) == {CONTAINER_TMP, METRICS_DIR}, workload["metadata"]["name"]
        for volume in mounts.values():
            assert set(volumes[volume]) == {"name", "emptyDir"}
            assert "sizeLimit" in volumes[volume]["emptyDir"]


@renders
def test_configuration_comes_from_the_configmap_and_secret_keys_from_the_template(name: str) -> None:
    docs = render(name)
    template = secret_template()
    assert template["kind"] == "Secret" and "data" not in template
    assert set(template["stringData"]) == REQUIRED_SECRETS | OPTIONAL_SECRETS
    assert all(value == "" for value in template["stringData"].values())  # never a real value
    assert not [doc for doc in docs if doc["kind"] == "Secret"]  # created by the operator, never rendered
    configmaps = {doc["metadata"]["name"] for doc in docs if doc["kind"] == "ConfigMap"}
    config = find(docs, "ConfigMap", "cognitionos")["data"]
    assert not set(config) & (REQUIRED_SECRETS | OPTIONAL_SECRETS)
    for workload, container in containers(docs):
        label = workload["metadata"]["name"]
        for source in container.get("envFrom", []):
            assert "secretRef" not in source, label  # each secret key is named, so a missing one stops the pod
            assert source["configMapRef"]["name"] in configmaps, label
        references = {
            item["valueFrom"]["secretKeyRef"]["key"]: item["valueFrom"]["secretKeyRef"]
            for item in container.get("env", [])
            if "secretKeyRef" in item.get("valueFrom", {})
        }
        assert set(references) == REQUIRED_SECRETS | OPTIONAL_SECRETS, label
        for key, reference in references.items():
            assert reference["name"] == template["metadata"]["name"], label
            assert key in template["stringData"], label
            assert reference.get("optional", False) is (key in OPTIONAL_SECRETS), (label, key)
        for item in container.get("env", []):
            if "secretKeyRef" in item.get("valueFrom", {}):
                assert item["name"] == item["valueFrom"]["secretKeyRef"]["key"], label


@renders
def test_beat_is_one_replica_recreated_and_never_autoscaled_or_budgeted(name: str) -> None:
    docs = render(name)
    beat = find(docs, "Deployment", "cognitionos-beat")
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}
    targets = {doc["spec"]["scaleTargetRef"]["name"] for doc in docs if doc["kind"] == "HorizontalPodAutoscaler"}
    assert "cognitionos-beat" not in targets
    budgets = [doc for doc in docs if doc["kind"] == "PodDisruptionBudget"]
    assert all("beat" not in selected(docs, budget["spec"]["selector"]) for budget in budgets)


def test_beat_probes_follow_its_heartbeat_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (container,) = pod_spec(find(render("base"), "Deployment", "cognitionos-beat"))["containers"]
    liveness, readiness = probe_script(container["livenessProbe"]), probe_script(container["readinessProbe"])
    # The file the probes read is the one beat writes.
    assert env_of(container)["BEAT_HEARTBEAT_FILE"] == "/tmp/cognitionos-beat"  # noqa: S108 - inside the container
    monkeypatch.setenv("BEAT_HEARTBEAT_FILE", env_of(container)["BEAT_HEARTBEAT_FILE"])
    assert beat_heartbeat_path() == Path(env_of(container)["BEAT_HEARTBEAT_FILE"])
    heartbeat = tmp_path / "cognitionos-beat"

    def passes(script: str) -> bool:
        return run_probe(script, BEAT_HEARTBEAT_FILE=str(heartbeat)) == 0

    assert not passes(liveness) and not passes(readiness)  # not written yet
    heartbeat.write_text(HEARTBEAT_STANDBY + "\n")
    assert passes(liveness)  # waiting for the lock: alive, not ready
    assert not passes(readiness)
    heartbeat.write_text(HEARTBEAT_ACTIVE + "\n")
    assert passes(liveness) and passes(readiness)
    stale = time.time() - 61
    os.utime(heartbeat, (stale, stale))
    assert not passes(liveness) and not passes(readiness)  # the loop stopped
    assert liveness == probe_script(services()["beat"]["healthcheck"]["test"])


def test_web_probes_ask_for_ready_and_live_with_an_allowed_host() -> None:
    docs = render("base")
    web = find(docs, "Deployment", "cognitionos-web")
    (container,) = pod_spec(web)["containers"]
    readiness, liveness = probe_script(container["readinessProbe"]), probe_script(container["livenessProbe"])
    assert "/health/ready" in readiness and "/health/live" in liveness
    with HealthServer("cognitionos.example.com", ready_status=503) as server:
        assert run_probe(liveness, server.port, BASE_DOMAIN="cognitionos.example.com") == 0
        assert run_probe(readiness, server.port, BASE_DOMAIN="cognitionos.example.com") != 0
        assert run_probe(liveness, server.port) != 0  # Host: localhost is refused
    with HealthServer("cognitionos.example.com", ready_status=200) as server:
        assert run_probe(readiness, server.port, BASE_DOMAIN="cognitionos.example.com") == 0
        assert server.seen[-1] == ("/health/ready", "cognitionos.example.com")


def test_worker_liveness_pings_its_own_node_and_readiness_is_its_metrics_port() -> None:
    (container,) = pod_spec(find(render("base"), "Deployment", "cognitionos-worker"))["containers"]
    command = container["livenessProbe"]["exec"]["command"]
    assert command[:2] == ["sh", "-c"]
    assert "inspect ping --destination celery@${HOSTNAME}" in command[2]
    # The probe's process must not leave metric files in the pod's multiprocess directory.
    assert "env -u PROMETHEUS_MULTIPROC_DIR celery" in command[2]
    assert container["readinessProbe"]["tcpSocket"]["port"] == "metrics"


def test_migration_job_runs_to_completion_once() -> None:
    job = find(render("base"), "Job", "cognitionos-migrate")
    assert pod_spec(job)["restartPolicy"] == "Never"
    assert job["spec"]["backoffLimit"] >= 1
    assert job["spec"]["activeDeadlineSeconds"] >= 1800


@renders
def test_config_objects_apply_alone_before_the_migration_job(name: str) -> None:
    """docs/deploy.md applies `-l app.kubernetes.io/component=config`, then `=migrate`, then the rest."""
    docs = render(name)
    config = {(doc["kind"], doc["metadata"]["name"]) for doc in docs if component(doc) == "config"}
    expected = {("ConfigMap", "cognitionos")} | ({("Namespace", NAMESPACE)} if name == "production" else set())
    assert config == expected
    assert {(doc["kind"], doc["metadata"]["name"]) for doc in docs if component(doc) == "migrate"} == {
        ("Job", "cognitionos-migrate")
    }


def component(doc: dict[str, Any]) -> str | None:
    labels: dict[str, str] = doc["metadata"].get("labels", {})
    return labels.get("app.kubernetes.io/component")


# --- scaling and disruption ---------------------------------------------------------------------


@renders
def test_autoscalers_scale_web_and_workers_that_exist(name: str) -> None:
    docs = render(name)
    targets = {}
    for hpa in (doc for doc in docs if doc["kind"] == "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        assert target["apiVersion"] == "apps/v1" and target["kind"] == "Deployment"
        deployment = find(docs, "Deployment", target["name"])
        assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
        # The count is the autoscaler's: a `replicas` here would be re-applied by every deploy.
        assert "replicas" not in deployment["spec"], target["name"]
        # CPU utilisation is relative to the request: every container must have one.
        assert all("cpu" in c["resources"]["requests"] for c in pod_spec(deployment)["containers"])
        targets[target["name"]] = hpa
    assert set(targets) == {"cognitionos-web", "cognitionos-worker"}
    if name == "production":
        (external,) = [m for m in targets["cognitionos-worker"]["spec"]["metrics"] if m["type"] == "External"]
        assert external["external"]["metric"]["name"] == "cognitionos_queue_depth"
        assert external["external"]["metric"]["selector"]["matchLabels"] == {"queue": "cognitionos"}


@renders
def test_disruption_budgets_select_existing_web_and_worker_pods(name: str) -> None:
    docs = render(name)
    covered = []
    for budget in (doc for doc in docs if doc["kind"] == "PodDisruptionBudget"):
        components = selected(docs, budget["spec"]["selector"])
        assert len(components) == 1, (budget["metadata"]["name"], components)
        covered += components
        assert budget["spec"]["maxUnavailable"] == 1
    assert sorted(covered) == ["web", "worker"]


# --- network ------------------------------------------------------------------------------------


def policies(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == "NetworkPolicy"]


def allowed_egress(docs: list[dict[str, Any]], component_name: str) -> list[dict[str, Any]]:
    labels = next(labels for labels in pod_labels(docs) if labels["app.kubernetes.io/component"] == component_name)
    return [
        rule
        for policy in policies(docs)
        if selects(policy["spec"]["podSelector"], labels)
        for rule in policy["spec"].get("egress", [])
    ]


def egress_ports(rules: list[dict[str, Any]]) -> set[int]:
    return {port["port"] for rule in rules for port in rule.get("ports", [])}


@renders
def test_network_policies_deny_by_default_and_select_existing_pods(name: str) -> None:
    docs = render(name)
    deny = find(docs, "NetworkPolicy", "cognitionos-default-deny")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    for policy in policies(docs):
        assert selected(docs, policy["spec"]["podSelector"]), policy["metadata"]["name"]
        for rule in policy["spec"].get("ingress", []) + policy["spec"].get("egress", []):
            for peer in rule.get("from", []) + rule.get("to", []):
                if "podSelector" in peer and "namespaceSelector" not in peer:  # a peer in this namespace
                    assert selected(docs, peer["podSelector"]), policy["metadata"]["name"]


@renders
def test_only_the_ingress_controller_and_prometheus_reach_the_pods(name: str) -> None:
    docs = render(name)
    inbound: dict[str, list[tuple[str, int]]] = {}
    for policy in policies(docs):
        for rule in policy["spec"].get("ingress", []):
            sources = [peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for peer in rule["from"]]
            assert all(set(peer) == {"namespaceSelector"} for peer in rule["from"])
            for component_name in selected(docs, policy["spec"]["podSelector"]):
                inbound.setdefault(component_name, []).extend(
                    (source, port["port"]) for source in sources for port in rule["ports"]
                )
    assert sorted(inbound["web"]) == [("ingress-nginx", 8000), ("monitoring", 8000)]
    assert inbound["worker"] == [("monitoring", 9808)]
    assert "beat" not in inbound and "migrate" not in inbound


@renders
def test_every_pod_reaches_dns_postgresql_and_redis_and_only_web_and_workers_the_internet(name: str) -> None:
    docs = render(name)
    for component_name in ("web", "worker", "beat", "migrate"):
        ports = egress_ports(allowed_egress(docs, component_name))
        assert {53, 5432, 6379, 4318} <= ports, component_name  # DNS, PostgreSQL, Redis, OTLP
        assert (443 in ports) is (component_name in {"web", "worker"}), component_name
    internet = find(docs, "NetworkPolicy", "cognitionos-egress-internet")["spec"]["egress"]
    for block in (peer["ipBlock"] for rule in internet for peer in rule["to"]):
        network = ipaddress.ip_network(block["cidr"])
        excluded = [ipaddress.ip_network(cidr) for cidr in block.get("except", [])]
        if network.version == 4:
            # Private ranges and the cloud metadata address stay closed.
            for private in PRIVATE_NETWORKS:
                assert any(ipaddress.ip_network(private).subnet_of(e) for e in excluded), private  # type: ignore[arg-type]
    # Database and Redis traffic goes to private addresses only.
    for rule in find(docs, "NetworkPolicy", "cognitionos-datastores")["spec"]["egress"]:
        for peer in rule["to"]:
            assert ipaddress.ip_network(peer["ipBlock"]["cidr"]).is_private


# --- ingress and metrics ------------------------------------------------------------------------


@renders
def test_ingress_serves_the_platform_host_and_every_organization_host_over_tls(name: str) -> None:
    docs = render(name)
    domain = find(docs, "ConfigMap", "cognitionos")["data"]["BASE_DOMAIN"]
    ingress = find(docs, "Ingress", "cognitionos")["spec"]
    hosts = {rule["host"] for rule in ingress["rules"]}
    assert hosts == {domain, f"*.{domain}"}
    (tls,) = ingress["tls"]
    assert set(tls["hosts"]) == hosts and tls["secretName"]
    origins = find(docs, "ConfigMap", "cognitionos")["data"]["CSRF_TRUSTED_ORIGINS"].split(",")
    assert set(origins) == {f"https://{host}" for host in hosts}
    service = find(docs, "Service", "cognitionos-web")
    web = find(docs, "Deployment", "cognitionos-web")
    assert selected(docs, {"matchLabels": service["spec"]["selector"]}) == [
        "web"
    ]  # a Service's selector is plain labels
    port_names = {port["name"] for port in service["spec"]["ports"]}
    container_ports = {port["name"] for port in pod_spec(web)["containers"][0]["ports"]}
    for rule in ingress["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            assert backend["name"] == "cognitionos-web" and backend["port"]["name"] in port_names
    assert {port["targetPort"] for port in service["spec"]["ports"]} <= container_ports


def test_production_certificate_comes_from_a_cert_manager_issuer() -> None:
    ingress = find(render("production"), "Ingress", "cognitionos")
    assert ingress["metadata"]["annotations"]["cert-manager.io/cluster-issuer"]


@renders
def test_metrics_are_announced_on_the_ports_that_serve_them(name: str) -> None:
    docs = render(name)
    expected = {"cognitionos-web": ("8000", "http"), "cognitionos-worker": ("9808", "metrics")}
    for deployment, (port, port_name) in expected.items():
        workload = find(docs, "Deployment", deployment)
        annotations = workload["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == port and annotations["prometheus.io/path"] == "/metrics"
        (container,) = pod_spec(workload)["containers"]
        assert {"name": port_name, "containerPort": int(port)} in container["ports"]
    (worker,) = pod_spec(find(docs, "Deployment", "cognitionos-worker"))["containers"]
    assert env_of(worker)["WORKER_METRICS_PORT"] == "9808"
    beat = find(docs, "Deployment", "cognitionos-beat")["spec"]["template"]["metadata"]
    assert "prometheus.io/scrape" not in beat.get("annotations", {})  # beat serves no metrics
