"""The deploy files are valid and agree with the code (fast: no cluster, no Docker, no network).

* The kustomize base and the production overlay are rendered by a small renderer below that implements
  exactly the kustomize features deploy/k8s uses; when ``kubectl`` or ``kustomize`` is installed, the
  renderer's output must equal the real one.
* Every rendered object (and the Secret template) validates against the Kubernetes OpenAPI schemas
  (``kubernetes-validate``, strict: unknown fields fail); the Prometheus Operator ServiceMonitors, which
  are not in those schemas, are checked by hand.
* Cross-checks with the code: ports, probe paths, ``REALTIME_*`` names and values, labels and selectors,
  NetworkPolicies, drain timing, ServiceMonitor ports, Grafana PromQL metric names, the NATS values and
  the Dockerfile.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import kubernetes_validate
import pytest
import yaml

from gateway.metrics import GatewayMetrics
from gateway.paths import API_DOCS_PATH, CONTRACT_PATHS
from gateway.settings import GatewaySettings
from scripts.processes import ROOT, free_port
from shared.config import options_of
from shared.probes import HEALTHZ_PATH, METRICS_PATH, READYZ_PATH, Readiness, probe_routes, serve_probes
from stats_collector.metrics import CollectorMetrics
from stats_collector.settings import CollectorSettings

GATEWAY_OPTIONS = options_of(GatewaySettings)
COLLECTOR_OPTIONS = options_of(CollectorSettings)

DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
BASE = K8S / "base"
PRODUCTION = K8S / "overlays" / "production"
TARGETS = {"base": BASE, "production": PRODUCTION}
SECRET_TEMPLATE = BASE / "jwt-secret.template.yaml"
# A version kubernetes-validate ships schemas for and current clusters run.
K8S_VERSION = "1.32.0"
CLUSTER_SCOPED = {"Namespace"}
NATS_RELEASE = "nats"
NATS_POD_LABELS = {"app.kubernetes.io/name": "nats", "app.kubernetes.io/instance": NATS_RELEASE}

Obj = dict[str, Any]


# -- a minimal kustomize -------------------------------------------------------------------------------


def _load_yaml_documents(path: Path) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _json_pointer_parts(pointer: str) -> list[str]:
    return [part.replace("~1", "/").replace("~0", "~") for part in pointer.lstrip("/").split("/")]


def _apply_json6902(target: Obj, operations: list[Obj]) -> None:
    for operation in operations:
        *parents, last = _json_pointer_parts(operation["path"])
        node: Any = target
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        op = operation["op"]
        if isinstance(node, list):
            index = len(node) if last == "-" else int(last)
            if op == "add":
                node.insert(index, copy.deepcopy(operation["value"]))
            elif op == "replace":
                node[index] = copy.deepcopy(operation["value"])
            elif op == "remove":
                del node[index]
            else:
                raise NotImplementedError(op)
        elif op in ("add", "replace"):
            if op == "replace" and last not in node:
                raise KeyError(f"replace of missing {operation['path']}")
            node[last] = copy.deepcopy(operation["value"])
        elif op == "remove":
            del node[last]
        else:
            raise NotImplementedError(op)


def _containers(obj: Obj) -> list[Obj]:
    spec = obj.get("spec", {})
    pod = spec.get("template", {}).get("spec", {}) if "template" in spec else {}
    if obj.get("kind") == "Job":
        pod = spec["template"]["spec"]
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


def render(directory: Path) -> list[Obj]:
    """Render one kustomization with the features deploy/k8s uses (and fail on any other)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    known = {
        "apiVersion",
        "kind",
        "resources",
        "namespace",
        "labels",
        "images",
        "patches",
        "configMapGenerator",
        "generatorOptions",
    }
    unknown = set(kustomization) - known
    assert not unknown, f"the test renderer does not implement {sorted(unknown)}: extend it or use kubectl"
    objects: list[Obj] = []
    for entry in kustomization.get("resources", []):
        path = directory / entry
        objects.extend(render(path) if path.is_dir() else _load_yaml_documents(path))
    options = kustomization.get("generatorOptions", {})
    assert options.get("disableNameSuffixHash") is True or not kustomization.get("configMapGenerator")
    for generator in kustomization.get("configMapGenerator", []):
        data: dict[str, str] = {}
        for item in generator.get("files", []):
            key, _, source = item.rpartition("=") if "=" in item else ("", "", item)
            data[key or Path(source).name] = (directory / source).read_text()
        metadata: Obj = {"name": generator["name"]}
        labels = {**options.get("labels", {}), **generator.get("options", {}).get("labels", {})}
        if labels:
            metadata["labels"] = labels
        objects.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data})
    for patch in kustomization.get("patches", []):
        operations = yaml.safe_load((directory / patch["path"]).read_text())
        assert isinstance(operations, list), "the test renderer applies JSON 6902 patches only"
        target = patch["target"]
        matched = [
            obj
            for obj in objects
            if obj["kind"] == target["kind"] and obj["metadata"]["name"] == target.get("name", obj["metadata"]["name"])
        ]
        assert matched, f"patch {patch['path']} matches nothing"
        for obj in matched:
            _apply_json6902(obj, operations)
    for image in kustomization.get("images", []):
        for obj in objects:
            for container in _containers(obj):
                name = re.split(r"[:@]", container["image"], maxsplit=1)[0]
                if name == image["name"]:
                    tag = image.get("newTag") or (container["image"].split(":", 1)[1:] or ["latest"])[0]
                    container["image"] = f"{image.get('newName', name)}:{tag}"
    for label_set in kustomization.get("labels", []):
        assert not label_set.get("includeSelectors") and not label_set.get("includeTemplates")
        for obj in objects:
            obj["metadata"].setdefault("labels", {}).update(label_set["pairs"])
    if "namespace" in kustomization:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = kustomization["namespace"]
    return objects


def _key(obj: Obj) -> tuple[str, str, str]:
    return (obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"])


def kustomize_binary() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


@pytest.fixture(scope="module", params=sorted(TARGETS))
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[Obj]]:
    return request.param, render(TARGETS[request.param])


def by_kind(objects: list[Obj], kind: str) -> list[Obj]:
    return [obj for obj in objects if obj["kind"] == kind]


def one(objects: list[Obj], kind: str, name: str) -> Obj:
    found = [obj for obj in objects if obj["kind"] == kind and obj["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def workloads(objects: list[Obj]) -> Iterator[Obj]:
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield obj


def pod_labels(workload: Obj) -> dict[str, str]:
    return dict(workload["spec"]["template"]["metadata"].get("labels", {}))


def pod_spec(workload: Obj) -> Obj:
    return dict(workload["spec"]["template"]["spec"])


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def env_of(container: Obj) -> dict[str, Obj]:
    return {item["name"]: item for item in container.get("env", [])}


# -- rendering ---------------------------------------------------------------------------------------


def test_the_k8s_alert_rules_are_a_copy_of_deploy_alert_rules() -> None:
    copied = (BASE / "alert-rules.toml").read_text()
    assert copied == (DEPLOY / "alert-rules.toml").read_text(), (
        "deploy/k8s/base/alert-rules.toml differs from deploy/alert-rules.toml; "
        "run: cp deploy/alert-rules.toml deploy/k8s/base/alert-rules.toml"
    )


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_the_test_renderer_agrees_with_kustomize(target: str) -> None:
    command = kustomize_binary()
    if command is None:
        pytest.skip("neither kustomize nor kubectl is installed; the manifests are checked with the test renderer")
    output = subprocess.run([*command, str(TARGETS[target])], check=True, capture_output=True, text=True).stdout
    real = {_key(obj): obj for obj in yaml.safe_load_all(output) if obj}
    ours = {_key(obj): obj for obj in render(TARGETS[target])}
    assert sorted(real) == sorted(ours)
    for key, obj in ours.items():
        assert obj == real[key], f"{key} differs from kustomize's rendering"


def test_the_overlay_changes_what_it_should(rendered: tuple[str, list[Obj]]) -> None:
    target, objects = rendered
    gateway = one(objects, "Deployment", "realtime-gateway")
    image = gateway["spec"]["template"]["spec"]["containers"][0]["image"]
    if target == "production":
        assert {obj["metadata"].get("namespace") for obj in objects if obj["kind"] != "Namespace"} == {"realtime-admin"}
        assert image == "registry.example.com/platform/realtime-admin:0.1.0"
        assert one(objects, "Ingress", "realtime-gateway")["spec"]["rules"][0]["host"] == "realtime-admin.example.com"
    else:
        assert image == "realtime-admin:latest"
    for obj in objects:
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "realtime-admin", _key(obj)


# -- schemas -------------------------------------------------------------------------------------------


def test_every_object_validates_against_the_kubernetes_schemas(rendered: tuple[str, list[Obj]]) -> None:
    _, objects = rendered
    checked = 0
    for obj in [*objects, *_load_yaml_documents(SECRET_TEMPLATE)]:
        if obj["apiVersion"].startswith(("monitoring.coreos.com/", "cert-manager.io/")):
            continue  # CRDs: checked in test_service_monitors_scrape_named_service_ports,
            # test_prometheus_rules_alert_on_what_the_code_exports / test_nats_*
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{_key(obj)}: {error.message} at {list(error.path)}")
        checked += 1
    assert checked >= 12


def test_every_required_kind_is_rendered(rendered: tuple[str, list[Obj]]) -> None:
    _, objects = rendered
    kinds = {obj["kind"] for obj in objects}
    assert {
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "Ingress",
        "ConfigMap",
        "NetworkPolicy",
        "ServiceMonitor",
    } <= kinds


# -- workloads against the code ----------------------------------------------------------------------------


def _container(objects: list[Obj], deployment: str) -> Obj:
    containers = one(objects, "Deployment", deployment)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def _option_defaults(options: Any) -> dict[str, Any]:
    return {option.env: option.default for option in options}


def test_container_ports_are_the_code_defaults(rendered: tuple[str, list[Obj]]) -> None:
    _, objects = rendered
    gateway = _container(objects, "realtime-gateway")
    collector = _container(objects, "realtime-collector")
    gateway_port = _option_defaults(GATEWAY_OPTIONS)["REALTIME_PORT"]
    metrics_port = _option_defaults(COLLECTOR_OPTIONS)["REALTIME_METRICS_PORT"]
    assert gateway_port == 5006 and metrics_port == 9106
    assert [p["containerPort"] for p in gateway["ports"]] == [gateway_port]
    assert [p["containerPort"] for p in collector["ports"]] == [metrics_port]
    # Where the manifests set the port explicitly, it is the same number.
    assert int(env_of(gateway).get("REALTIME_PORT", {"value": gateway_port})["value"]) == gateway_port
    assert int(env_of(collector).get("REALTIME_METRICS_PORT", {"value": metrics_port})["value"]) == metrics_port
    assert gateway["args"] == ["gateway"] and collector["args"] == ["stats_collector"]


def test_env_names_and_values_are_options_the_process_reads(rendered: tuple[str, list[Obj]]) -> None:
    _, objects = rendered
    for deployment, options in (("realtime-gateway", GATEWAY_OPTIONS), ("realtime-collector", COLLECTOR_OPTIONS)):
        by_env = {option.env: option for option in options}
        for name, item in env_of(_container(objects, deployment)).items():
            assert name.startswith("REALTIME_"), f"{deployment}: {name} is not a setting"
            assert name in by_env, f"{deployment}: {name} is not an option of {deployment} (a typo?)"
            if "value" in item and not name.endswith("_FILE"):  # files exist in the pod, not here
                by_env[name].parse(item["value"])  # raises on a value the process would refuse


def test_required_gateway_settings_come_from_the_secret_template(rendered: tuple[str, list[Obj]]) -> None:
    _, objects = rendered
    secret = _load_yaml_documents(SECRET_TEMPLATE)[0]
    container = _container(objects, "realtime-gateway")
    env = env_of(container)
    ref = env["REALTIME_CONNECTION_TOKEN_SECRET"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == secret["metadata"]["name"]
    assert ref["key"] in secret["stringData"]
    # The JWT key is a file of a Secret volume, not a variable.
    assert "REALTIME_JWT_SECRET" not in env
    path = Path(env["REALTIME_JWT_SECRET_FILE"]["value"])
    mount = next(m for m in container["volumeMounts"] if path.parent == Path(m["mountPath"]))
    assert mount.get("readOnly") is True
    volume = next(
        v for v in pod_spec(one(objects, "Deployment", "realtime-gateway"))["volumes"] if v["name"] == mount["name"]
    )
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    item = next(i for i in volume["secret"]["items"] if i["path"] == path.name)
    assert item["key"] in secret["stringData"]
    assert not by_kind(objects, "Secret"), "no Secret with a value belongs in the manifests"


def test_production_accepts_only_tokens_for_its_issuer_and_audience() -> None:
    """Without both, a token of the same identity service for another API (aud=billing-api) would pass."""
    env = env_of(_container(render(PRODUCTION), "realtime-gateway"))
    assert env["REALTIME_JWT_ISSUER"]["value"].startswith("https://")
    assert env["REALTIME_JWT_AUDIENCE"]["value"]


def test_probes_use_routes_the_processes_serve(rendered: tuple[str, list[Obj]]) -> None:
    from gateway.app import create_gateway
    from gateway.settings import GatewaySettings

    _, objects = rendered
    app = create_gateway(GatewaySettings(jwt_secret="x" * 32))
    gateway_routes = {route.resource.canonical for route in app.router.routes() if route.method == "GET"}
    for deployment in ("realtime-gateway", "realtime-collector"):
        container = _container(objects, deployment)
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for deployment, paths in (
        ("realtime-gateway", gateway_routes),
        ("realtime-collector", {HEALTHZ_PATH, READYZ_PATH}),
    ):
        container = _container(objects, deployment)
        port_names = {port["name"] for port in container["ports"]}
        for probe in ("readinessProbe", "livenessProbe"):
            get = container[probe]["httpGet"]
            assert get["path"] in paths, f"{deployment} {probe}: no route {get['path']}"
            assert get["port"] in port_names


async def test_the_probe_server_answers_the_manifests_paths() -> None:
    """Both processes serve ``shared.probes``; the collector on its own port: start that server and ask."""
    port = free_port()
    ready = False
    readiness = Readiness()
    readiness.require("jetstream", lambda: ready)
    routes = probe_routes(readiness=readiness, registry=CollectorMetrics().registry)
    runner = await serve_probes(routes, host="127.0.0.1", port=port)
    try:
        async with aiohttp.ClientSession() as session:
            for path, status in ((HEALTHZ_PATH, 200), (METRICS_PATH, 200), (READYZ_PATH, 503)):
                async with session.get(f"http://127.0.0.1:{port}{path}") as response:
                    assert response.status == status, path
            async with session.get(f"http://127.0.0.1:{port}{READYZ_PATH}") as response:
                assert await response.text() == "not ready: jetstream"
            ready = True
            async with session.get(f"http://127.0.0.1:{port}{READYZ_PATH}") as response:
                assert response.status == 200
    finally:
        await runner.cleanup()


def test_gateway_rollout_and_drain(rendered: tuple[str, list[Obj]]) -> None:
    _, objects = rendered
    deployment = one(objects, "Deployment", "realtime-gateway")
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    container = _container(objects, "realtime-gateway")
    defaults = _option_defaults(GATEWAY_OPTIONS)
    grace = float(
        env_of(container)
        .get("REALTIME_SHUTDOWN_GRACE_SECONDS", {})
        .get("value", defaults["REALTIME_SHUTDOWN_GRACE_SECONDS"])
    )
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])
    # aiohttp's shutdown timeout is grace + 1 s (gateway/__main__.py), then NATS drains (a few seconds).
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > pre_stop + grace + 1 + 10


def test_an_active_collector_and_a_standby(rendered: tuple[str, list[Obj]]) -> None:
    _, objects = rendered
    collector = one(objects, "Deployment", "realtime-collector")
    assert collector["spec"]["replicas"] == 2
    # Rolling: a new pod starts (standby) before an old one stops (releasing the lease to the other).
    assert collector["spec"]["strategy"]["type"] == "RollingUpdate"
    assert collector["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pdb = one(objects, "PodDisruptionBudget", "realtime-collector")
    assert selects(pdb["spec"]["selector"]["matchLabels"], pod_labels(collector))
    assert pdb["spec"]["maxUnavailable"] == 1
    anti = pod_spec(collector)["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert selects(anti[0]["podAffinityTerm"]["labelSelector"]["matchLabels"], pod_labels(collector))
    env = env_of(_container(objects, "realtime-collector"))
    # Each replica names itself in the lease by its pod name.
    assert env["REALTIME_REPLICA_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    # The standby must take over before the liveness probe would give up on anything.
    lease = float(
        env.get("REALTIME_LEASE_TTL_SECONDS", {}).get(
            "value", _option_defaults(COLLECTOR_OPTIONS)["REALTIME_LEASE_TTL_SECONDS"]
        )
    )
    assert lease < 10
    rules = env["REALTIME_ALERT_RULES_FILE"]["value"]
    mounts = {m["name"]: m["mountPath"] for m in _container(objects, "realtime-collector")["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(collector)["volumes"]}
    config_map = volumes["alert-rules"]["configMap"]["name"]
    data = one(objects, "ConfigMap", config_map)["data"]
    assert rules == f"{mounts['alert-rules']}/alert-rules.toml"
    assert data["alert-rules.toml"] == (DEPLOY / "alert-rules.toml").read_text()


def test_containers_are_locked_down(rendered: tuple[str, list[Obj]]) -> None:
    _, objects = rendered
    for workload in workloads(objects):
        pod = pod_spec(workload)
        assert pod["securityContext"]["runAsNonRoot"] is True, _key(workload)
        assert pod["securityContext"]["runAsUser"] == _dockerfile_user_id() or workload["kind"] == "Job"
        for container in _containers(workload):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, _key(workload)
            assert context["readOnlyRootFilesystem"] is True, _key(workload)
            assert context["capabilities"]["drop"] == ["ALL"], _key(workload)
            assert "resources" in container and container["resources"]["requests"], _key(workload)


# -- labels and selectors ------------------------------------------------------------------------------------


def test_workload_selectors_match_their_pods(rendered: tuple[str, list[Obj]]) -> None:
    _, objects = rendered
    for deployment in by_kind(objects, "Deployment"):
        assert selects(deployment["spec"]["selector"]["matchLabels"], pod_labels(deployment)), _key(deployment)


def test_services_select_pods_and_ports_that_exist(rendered: tuple[str, list[Obj]]) -> None:
    _, objects = rendered
    for service in by_kind(objects, "Service"):
        pods = [w for w in workloads(objects) if selects(service["spec"]["selector"], pod_labels(w))]
        assert len(pods) == 1, f"{_key(service)} selects {len(pods)} workloads"
        port_names = {p["name"] for c in _containers(pods[0]) for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names
        assert service["spec"].get("sessionAffinity", "None") == "None"


def test_pdb_and_hpa_point_at_the_gateway(rendered: tuple[str, list[Obj]]) -> None:  # the collector's: above
    _, objects = rendered
    gateway = one(objects, "Deployment", "realtime-gateway")
    pdb = one(objects, "PodDisruptionBudget", "realtime-gateway")
    assert selects(pdb["spec"]["selector"]["matchLabels"], pod_labels(gateway))
    hpa = one(objects, "HorizontalPodAutoscaler", "realtime-gateway")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "realtime-gateway"}
    assert hpa["spec"]["minReplicas"] >= gateway["spec"]["replicas"]


def test_network_policies_select_the_pods_they_mean(rendered: tuple[str, list[Obj]]) -> None:
    _, objects = rendered
    pods = {w["metadata"]["name"]: pod_labels(w) for w in workloads(objects)}
    pods["nats (Helm release)"] = NATS_POD_LABELS
    policies = {p["metadata"]["name"]: p for p in by_kind(objects, "NetworkPolicy")}

    def selected(selector: Obj) -> set[str]:
        return {name for name, labels in pods.items() if selects(selector.get("matchLabels", {}), labels)}

    nats = policies["nats-allow-realtime-clients"]
    assert selected(nats["spec"]["podSelector"]) == {"nats (Helm release)"}
    client_rule = next(r for r in nats["spec"]["ingress"] if {"port": 4222, "protocol": "TCP"} in r["ports"])
    allowed = set().union(*(selected(peer["podSelector"]) for peer in client_rule["from"]))
    assert allowed == {"realtime-gateway", "realtime-collector", "realtime-nats-setup"}
    gateway = policies["realtime-gateway-ingress"]
    assert selected(gateway["spec"]["podSelector"]) == {"realtime-gateway"}
    namespaces = {
        peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for rule in gateway["spec"]["ingress"]
        for peer in rule["from"]
    }
    assert namespaces == {"ingress-nginx", "monitoring"}
    assert selected(policies["realtime-collector-ingress"]["spec"]["podSelector"]) == {"realtime-collector"}
    # Named ports in policies exist on the selected pods.
    for policy in policies.values():
        for name in selected(policy["spec"]["podSelector"]) - {"nats (Helm release)"}:
            workload = next(w for w in workloads(objects) if w["metadata"]["name"] == name)
            port_names = {p["name"] for c in _containers(workload) for p in c.get("ports", [])}
            for rule in policy["spec"]["ingress"]:
                for port in rule["ports"]:
                    assert not isinstance(port["port"], str) or port["port"] in port_names


def test_nats_labels_follow_the_helm_values() -> None:
    values = yaml.safe_load((DEPLOY / "nats" / "values.yaml").read_text())
    assert {key: values["config"]["cluster"][key] for key in ("enabled", "replicas")} == {
        "enabled": True,
        "replicas": 3,
    }
    assert values["config"]["jetstream"]["enabled"] is True
    assert values["config"]["jetstream"]["fileStore"]["enabled"] is True
    # The chart's pod selector labels are app.kubernetes.io/name=<chart name> and instance=<release>.
    assert "nameOverride" not in values and "fullnameOverride" not in values
    assert f"helm upgrade --install {NATS_RELEASE} nats/nats" in (DEPLOY / "nats" / "values.yaml").read_text()


def test_stream_replicas_and_nats_url_match_the_nats_cluster(rendered: tuple[str, list[Obj]]) -> None:
    _, objects = rendered
    replicas = yaml.safe_load((DEPLOY / "nats" / "values.yaml").read_text())["config"]["cluster"]["replicas"]
    collector = env_of(_container(objects, "realtime-collector"))
    assert int(collector["REALTIME_STREAM_REPLICAS"]["value"]) == replicas
    for deployment in ("realtime-gateway", "realtime-collector"):
        assert env_of(_container(objects, deployment))["REALTIME_NATS_URL"]["value"] == f"tls://{NATS_RELEASE}:4222"
    job = one(objects, "Job", "realtime-nats-setup")
    script = job["spec"]["template"]["spec"]["containers"][0]["args"][0]
    from broker_bridge.keyvalue import PRESENCE_BUCKET, REPLICAS_BUCKET, SNAPSHOT_BUCKET
    from gateway.hub.presence import STALE_FACTOR
    from stats_collector.jetstream import IDS_BUCKET, LEASE_BUCKET, STATE_BUCKET, USERS_BUCKET
    from stats_collector.state_store import EXPIRY_SLACK_SECONDS

    presence = _option_defaults(GATEWAY_OPTIONS)["REALTIME_PRESENCE_INTERVAL_SECONDS"]
    for bucket in (SNAPSHOT_BUCKET, REPLICAS_BUCKET, STATE_BUCKET, IDS_BUCKET, USERS_BUCKET, LEASE_BUCKET):
        assert re.search(rf"ensure {bucket} --replicas {replicas}\b", script), bucket
    assert f"ensure {REPLICAS_BUCKET} --replicas {replicas} --history 1 --ttl {presence * STALE_FACTOR:g}s" in script
    presence_ttl = _option_defaults(GATEWAY_OPTIONS)["REALTIME_PRESENCE_TTL_SECONDS"]
    assert f"ensure {PRESENCE_BUCKET} --replicas {replicas} --history 1 --ttl {presence_ttl:g}s" in script
    collector = _option_defaults(COLLECTOR_OPTIONS)
    ttls = {
        IDS_BUCKET: collector["REALTIME_DEDUP_WINDOW_SECONDS"] + EXPIRY_SLACK_SECONDS,
        USERS_BUCKET: collector["REALTIME_ACTIVE_WINDOW_SECONDS"]
        + collector["REALTIME_FUTURE_TOLERANCE_SECONDS"]
        + EXPIRY_SLACK_SECONDS,
        LEASE_BUCKET: collector["REALTIME_LEASE_TTL_SECONDS"],
    }
    for bucket, ttl in ttls.items():
        assert f"ensure {bucket} --replicas {replicas} --history 1 --ttl {ttl:g}s" in script, bucket


# -- Ingress and monitoring ---------------------------------------------------------------------------------


def test_ingress_serves_wss_without_affinity_and_hides_probes(rendered: tuple[str, list[Obj]]) -> None:
    _, objects = rendered
    ingress = one(objects, "Ingress", "realtime-gateway")
    annotations = ingress["metadata"]["annotations"]
    assert not [key for key in annotations if "affinity" in key or "sticky" in key]
    # The hub's WebSocket URL carries ?access_token=<JWT>; ingress-nginx's default format logs the request line.
    assert annotations["nginx.ingress.kubernetes.io/enable-access-log"] == "false"
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-send-timeout"]) >= 3600
    rule = ingress["spec"]["rules"][0]
    assert rule["host"] in ingress["spec"]["tls"][0]["hosts"]
    services = {s["metadata"]["name"]: s for s in by_kind(objects, "Service")}
    paths = rule["http"]["paths"]
    for path in paths:
        backend = path["backend"]["service"]
        assert backend["port"]["name"] in {p["name"] for p in services[backend["name"]]["spec"]["ports"]}

    def routed(url_path: str) -> bool:
        for path in paths:
            if path["pathType"] == "Exact" and url_path == path["path"]:
                return True
            if path["pathType"] == "Prefix" and (url_path == path["path"] or url_path.startswith(path["path"] + "/")):
                return True
        return False

    assert routed("/hubs/admin") and routed("/hubs/admin/negotiate") and routed("/api/admin/realtime/health")
    assert routed("/")
    for contract in (*CONTRACT_PATHS, API_DOCS_PATH, API_DOCS_PATH + "/app.js"):
        assert routed(contract), contract
    assert not routed("/metrics") and not routed("/readyz") and not routed("/healthz")


def test_service_monitors_scrape_named_service_ports(rendered: tuple[str, list[Obj]]) -> None:
    _, objects = rendered
    monitors = by_kind(objects, "ServiceMonitor")
    assert {m["metadata"]["name"] for m in monitors} == {"realtime-gateway", "realtime-collector"}
    for monitor in monitors:
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert set(monitor["spec"]) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}
        services = [
            s
            for s in by_kind(objects, "Service")
            if selects(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
        ]
        assert len(services) == 1, _key(monitor)
        port_names = {p["name"] for p in services[0]["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout"}
            assert endpoint["port"] in port_names
            assert endpoint["path"] == "/metrics"


def _exported_series() -> set[str]:
    """Every series name the code's registries can expose (counters with _total, histograms with _bucket...)."""
    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
    }
    names: set[str] = set()
    for metrics in (GatewayMetrics(), CollectorMetrics()):
        for family in metrics.registry.collect():
            names.update(family.name + suffix for suffix in suffixes[family.type])
    return names


def _dashboard_expressions() -> list[str]:
    dashboard = json.loads((BASE / "grafana" / "realtime-admin-dashboard.json").read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def _metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (identifiers with an underscore that are not functions)."""
    without_labels = re.sub(r"\{[^}]*\}", "", expr)
    without_strings = re.sub(r'"[^"]*"', "", without_labels)
    # Drop the label lists of by/without/on/ignoring, then every identifier followed by "(" is a function.
    without_groupings = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", without_strings)
    # Range and subquery durations ([5m], [2m:15s]) are not names either.
    without_ranges = re.sub(r"\[[^\]]*\]", "", without_groupings)
    return {
        match.group()
        for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", without_ranges)
        if not without_ranges[match.end() :].lstrip().startswith("(") and "_" in match.group()
    }


def _assert_only_exported_metrics(expressions: list[str], exported: set[str]) -> set[str]:
    """Every expression reads at least one metric and only exported ones; returns the names used."""
    assert expressions
    used: set[str] = set()
    for expr in expressions:
        names = _metric_names(expr)
        assert names, f"no metric in {expr!r}"
        unknown = names - exported
        assert not unknown, f"{expr!r} uses {sorted(unknown)}, which no registry defines"
        used |= names
    return used


def test_grafana_dashboard_uses_only_metrics_the_code_exports() -> None:
    exported = _exported_series()
    assert "realtime_connections" in exported and "collector_events_total" in exported
    used = _assert_only_exported_metrics(_dashboard_expressions(), exported)
    families = {name for m in (GatewayMetrics(), CollectorMetrics()) for name in (f.name for f in m.registry.collect())}
    missing = {f for f in families if not any(u == f or u.startswith(f + "_") for u in used)}
    assert not missing, f"the dashboard shows nothing of {sorted(missing)}"


def test_prometheus_rules_alert_on_what_the_code_exports(rendered: tuple[str, list[Obj]]) -> None:
    _, objects = rendered
    rule = one(objects, "PrometheusRule", "realtime-admin")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    # kube-prometheus-stack selects rules by the same release label as the ServiceMonitors.
    monitor = one(objects, "ServiceMonitor", "realtime-gateway")
    assert rule["metadata"]["labels"]["release"] == monitor["metadata"]["labels"]["release"]
    assert set(rule["spec"]) == {"groups"}
    alerts = [item for group in rule["spec"]["groups"] for item in group["rules"]]
    names = [item["alert"] for item in alerts]
    assert len(names) == len(set(names)), "alert names must be unique"
    for item in alerts:
        assert set(item) <= {"alert", "expr", "for", "labels", "annotations"}, item["alert"]
        assert re.fullmatch(r"Realtime[A-Za-z]+", item["alert"])
        assert item["labels"]["severity"] in {"critical", "warning", "info"}, item["alert"]
        assert {"summary", "description"} <= set(item["annotations"]), item["alert"]
        if "for" in item:
            assert re.fullmatch(r"\d+[smh]", item["for"]), item["alert"]
        expr = item["expr"]
        assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), item["alert"]
    used = _assert_only_exported_metrics([item["expr"] for item in alerts], _exported_series())
    # What the issue asks for: readiness, NATS, collector lag and gaps, slow consumers, limits, GC pauses.
    for needed in (
        "realtime_ready",
        "realtime_nats_connected",
        "collector_stream_lag",
        "collector_lag_seconds",
        "collector_last_publish_timestamp_seconds",
        "collector_stream_gaps_total",
        "realtime_connections_closed_total",
        "realtime_limit_refusals_total",
        "realtime_gc_pause_seconds_bucket",
    ):
        assert needed in used, needed


def test_grafana_dashboard_is_provisioned_by_label(rendered: tuple[str, list[Obj]]) -> None:
    _, objects = rendered
    config_map = one(objects, "ConfigMap", "realtime-grafana-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["realtime-admin.json"])["uid"] == "realtime-admin"


# -- the image ----------------------------------------------------------------------------------------------------


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = (DEPLOY / "docker" / "Dockerfile").read_text()
    joined = re.sub(r"\\\n", " ", text)
    instructions = []
    for line in joined.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def _dockerfile_user_id() -> int:
    users = [rest for keyword, rest in _dockerfile_instructions() if keyword == "USER"]
    return int(users[-1].split(":")[0])


def _final_stage() -> list[tuple[str, str]]:
    instructions = _dockerfile_instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def test_dockerfile_is_multi_stage_non_root_and_runs_any_process() -> None:
    instructions = _dockerfile_instructions()
    stages = [rest.split() for keyword, rest in instructions if keyword == "FROM"]
    assert [stage[-1] for stage in stages] == ["dashboard", "python-deps", "runtime"]
    final = _final_stage()
    assert _dockerfile_user_id() >= 10000
    user_index = max(i for i, (k, _) in enumerate(final) if k == "USER")
    assert all(k not in ("RUN", "COPY") for k, _ in final[user_index + 1 :]), "nothing runs as root after USER"
    assert json.loads(dict(final)["ENTRYPOINT"]) == ["python", "-m"]
    assert json.loads(dict(final)["CMD"]) == ["gateway"]
    exposed = {int(port) for keyword, rest in final if keyword == "EXPOSE" for port in rest.split()}
    assert exposed == {
        _option_defaults(GATEWAY_OPTIONS)["REALTIME_PORT"],
        _option_defaults(COLLECTOR_OPTIONS)["REALTIME_METRICS_PORT"],
    }


def test_dockerfile_copies_every_package_and_the_default_rules() -> None:
    copied = set()
    for keyword, rest in _final_stage():
        if keyword == "COPY" and not rest.startswith("--from"):
            *sources, _ = rest.split()
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: no such path in the repository"
                copied.add(source.rstrip("/"))
    # The runtime packages are the ones pyproject.toml installs (bench/, scripts/, tests/ are dev tools).
    includes = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = {pattern.rstrip("*") for pattern in includes["include"]}
    assert packages <= copied, f"not in the image: {sorted(packages - copied)}"
    assert "deploy/alert-rules.toml" in copied
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    for needed in ("pyproject.toml", "deploy/alert-rules.toml", "dashboard/", *(p + "/" for p in packages)):
        assert needed not in ignored and needed.split("/")[0] + "/" not in ignored, needed


# -- NATS locked down ---------------------------------------------------------------------------------------

NATS_SECRET_DIR = "/var/run/secrets/realtime-admin/nats"


def _pod_spec(objects: list[Obj], kind: str, name: str) -> Obj:
    return dict(one(objects, kind, name)["spec"]["template"]["spec"])


def _certificates(objects: list[Obj]) -> dict[str, Obj]:
    return {obj["spec"]["secretName"]: obj for obj in by_kind(objects, "Certificate")}


@pytest.mark.parametrize(
    ("kind", "name", "inbox"),
    [("Deployment", "realtime-gateway", "_INBOX.gateway"), ("Deployment", "realtime-collector", "_INBOX.collector")],
)
def test_services_mount_their_own_nats_credentials_from_secrets(
    rendered: tuple[str, list[Obj]], kind: str, name: str, inbox: str
) -> None:
    from scripts.nats_accounts import load_users, roles

    _, objects = rendered
    spec = _pod_spec(objects, kind, name)
    env = env_of(spec["containers"][0])
    assert env["REALTIME_NATS_URL"]["value"].startswith("tls://")
    files = {
        key: item["value"] for key, item in env.items() if key.startswith("REALTIME_NATS_") and key.endswith("_FILE")
    }
    assert set(files) == {
        "REALTIME_NATS_NKEY_SEED_FILE",
        "REALTIME_NATS_TLS_CA_FILE",
        "REALTIME_NATS_TLS_CERT_FILE",
        "REALTIME_NATS_TLS_KEY_FILE",
    }
    mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["mountPath"] == NATS_SECRET_DIR)
    assert mount["readOnly"] is True
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    sources = {source["secret"]["name"]: source["secret"]["items"] for source in volume["projected"]["sources"]}
    assert set(sources) == {f"{name}-nats", f"{name}-nats-tls"}, "each component its own Secrets"
    paths = {f"{NATS_SECRET_DIR}/{item['path']}" for items in sources.values() for item in items}
    assert set(files.values()) <= paths
    assert f"{name}-nats-tls" in _certificates(objects), "cert-manager issues the client certificate"
    assert _certificates(objects)[f"{name}-nats-tls"]["spec"]["usages"] == ["client auth"]
    # The user of that name exists with the role whose inbox the process uses.
    user = next(u for u in load_users() if u.name == name)
    assert f"{inbox}.>" in roles()[user.role].subscribe
    assert env["REALTIME_NATS_INBOX_PREFIX"]["value"] == inbox
    assert not any(key.startswith("REALTIME_NATS_") and "valueFrom" in item for key, item in env.items())


def test_the_setup_job_connects_as_an_admin_with_tls(rendered: tuple[str, list[Obj]]) -> None:
    from scripts.nats_accounts import load_users

    _, objects = rendered
    spec = _pod_spec(objects, "Job", "realtime-nats-setup")
    env = env_of(spec["containers"][0])
    assert env["NATS_URL"]["value"] == f"tls://{NATS_RELEASE}:4222"
    assert {"NATS_NKEY", "NATS_CA", "NATS_CERT", "NATS_KEY"} <= set(env)
    assert next(u for u in load_users() if u.name == "realtime-nats-setup").role == "admin"


def test_nats_values_require_tls_and_include_the_generated_accounts() -> None:
    values = yaml.safe_load((DEPLOY / "nats" / "values.yaml").read_text())
    client_tls = values["config"]["nats"]["tls"]
    route_tls = values["config"]["cluster"]["tls"]
    assert client_tls["enabled"] and route_tls["enabled"]
    assert client_tls["merge"]["verify"] is True and route_tls["merge"]["verify"] is True
    assert client_tls["merge"]["handshake_first"]
    assert client_tls["secretName"] == route_tls["secretName"] == values["tlsCA"]["secretName"] == "nats-server-tls"
    assert values["config"]["merge"]["00$include"] == "accounts.conf"
    assert "accounts.conf" not in json.dumps(values.get("configMap", {})), "no placeholder that would open NATS"
    assert (
        "--set-file 'configMap.merge.data.accounts\\.conf=deploy/nats/accounts.conf'"
        in (DEPLOY / "nats" / "values.yaml").read_text()
    )


def test_the_nats_server_certificate_names_the_service_and_the_route_hosts(rendered: tuple[str, list[Obj]]) -> None:
    _, objects = rendered
    server = _certificates(objects)["nats-server-tls"]["spec"]
    assert NATS_RELEASE in server["dnsNames"] and f"*.{NATS_RELEASE}-headless" in server["dnsNames"]
    assert set(server["usages"]) == {"server auth", "client auth"}
    issuers = {obj["metadata"]["name"]: obj for obj in by_kind(objects, "Issuer")}
    assert issuers[server["issuerRef"]["name"]]["spec"]["ca"]["secretName"] == "realtime-nats-ca"


def test_publishers_reach_nats_by_label(rendered: tuple[str, list[Obj]]) -> None:
    _, objects = rendered
    policy = one(objects, "NetworkPolicy", "nats-allow-realtime-clients")
    client_rule = next(r for r in policy["spec"]["ingress"] if {"port": 4222, "protocol": "TCP"} in r["ports"])
    assert {
        "namespaceSelector": {},
        "podSelector": {"matchLabels": {"realtime-admin.io/nats-publisher": "true"}},
    } in client_rule["from"]
