"""deploy/k8s/ checked offline: every object strictly against the Kubernetes schemas (kubernetes-validate), the CRD
objects (no schema ships for them) by structure, and the wiring between objects and the service itself: selectors
that select, ports and probes that exist, settings that parse, a metric the service exports."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.env import REPO, require_or_skip

K8S = REPO / "deploy" / "k8s"
# The oldest Kubernetes still in upstream support when this was written, and the newest the package knows.
VERSIONS = ("1.32.0", "1.37.0")
# Objects of custom resource definitions: kubernetes-validate has no schema for them; their structure is checked here.
CRDS = {("kustomize.config.k8s.io/v1beta1", "Kustomization"), ("monitoring.coreos.com/v1", "PodMonitor")}
NOT_IN_KUSTOMIZATION = {"secret.example.yaml", "prometheus-adapter/rules.yaml"}  # applied elsewhere (see each file)


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.rglob("*") if p.suffix in (".yaml", ".yml"))


def objects(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def rendered() -> list[dict[str, Any]]:
    """What `kubectl apply -k deploy/k8s` applies: the kustomization has resources only (checked below), so the
    render is those files' objects, in order."""
    kust = objects(K8S / "kustomization.yaml")[0]
    return [obj for name in kust["resources"] for obj in objects(K8S / name)]


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [o for o in rendered() if o["kind"] == kind]


def one(kind: str, name: str) -> dict[str, Any]:
    found = [
        o
        for o in [*rendered(), *objects(K8S / "secret.example.yaml")]
        if (o["kind"], o["metadata"]["name"]) == (kind, name)
    ]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} objects"
    return found[0]


def workloads() -> list[dict[str, Any]]:
    return by_kind("StatefulSet") + by_kind("Deployment")


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def container(workload: dict[str, Any]) -> dict[str, Any]:
    (c,) = workload["spec"]["template"]["spec"]["containers"]
    return c


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_manifest_validates_strictly(path: Path) -> None:
    kv = validator()
    docs = objects(path)
    assert docs, f"{path} holds no object"
    for obj in docs:
        key = (obj.get("apiVersion"), obj.get("kind"))
        if key in CRDS:
            continue  # structure: test_crd_objects_are_well_formed
        for version in VERSIONS:
            try:
                kv.validate(obj, version, strict=True)
            except kv.ValidationError as e:
                where = "/".join(str(p) for p in e.absolute_path)
                pytest.fail(f"{path.name} {key[1]}/{obj['metadata'].get('name')} @ {version} {where}: {e.message}")


def validator() -> Any:
    """The kubernetes_validate module (dev dependency): missing, skip locally and fail in CI."""
    try:
        import kubernetes_validate
    except ImportError:
        require_or_skip(False, "kubernetes-validate missing (pip install -e '.[dev]')")
        raise
    return kubernetes_validate


def test_strict_validation_catches_a_typo() -> None:
    """The validator is really strict here: a misspelt field of an HPA target fails."""
    kv = validator()
    hpa = one("HorizontalPodAutoscaler", "vsr-upscale")
    bad = yaml.safe_load(yaml.safe_dump(hpa))
    target = bad["spec"]["metrics"][0]["pods"]["target"]
    target["averageValu"] = target.pop("averageValue")
    with pytest.raises(kv.ValidationError, match="averageValu"):
        kv.validate(bad, VERSIONS[-1], strict=True)


def test_kustomization_is_resources_only_and_complete() -> None:
    kust = objects(K8S / "kustomization.yaml")[0]
    assert set(kust) == {"apiVersion", "kind", "resources"}, "generators/patches would need a kustomize render here"
    listed = set(kust["resources"])
    present = {str(p.relative_to(K8S)) for p in manifest_files()} - {"kustomization.yaml"}
    assert listed == present - NOT_IN_KUSTOMIZATION


def test_crd_objects_are_well_formed() -> None:
    (pm,) = by_kind("PodMonitor")
    assert pm["apiVersion"] == "monitoring.coreos.com/v1" and set(pm) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(pm["spec"]) <= {"selector", "podMetricsEndpoints", "namespaceSelector", "jobLabel"}
    endpoints = pm["spec"]["podMetricsEndpoints"]
    assert endpoints and all(set(ep) <= {"port", "path", "interval", "scrapeTimeout", "scheme"} for ep in endpoints)
    for w in workloads():  # it scrapes both roles, on a port each pod declares, at the service's metrics route
        assert selects(pm["spec"]["selector"]["matchLabels"], w["spec"]["template"]["metadata"]["labels"])
        ports = {p["name"] for p in container(w)["ports"]}
        assert all(ep["port"] in ports and ep["path"] == "/metrics" for ep in endpoints)


def test_every_object_has_the_recommended_labels() -> None:
    for o in rendered():
        if o["kind"] == "Kustomization":
            continue
        labels = o["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/name") == "vsr", o["metadata"]["name"]


def test_selectors_select_pods_and_ports_exist() -> None:
    pods = [w["spec"]["template"]["metadata"]["labels"] for w in workloads()]
    for w in workloads():
        assert selects(w["spec"]["selector"]["matchLabels"], w["spec"]["template"]["metadata"]["labels"])
    for svc in by_kind("Service"):
        matched = [
            w for w in workloads() if selects(svc["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"])
        ]
        assert len(matched) == 1, f"Service {svc['metadata']['name']} selects {len(matched)} workloads"
        names = {p["name"] for p in container(matched[0])["ports"]}
        assert all(p["targetPort"] in names for p in svc["spec"]["ports"])
    for pdb in by_kind("PodDisruptionBudget"):
        assert sum(selects(pdb["spec"]["selector"]["matchLabels"], labels) for labels in pods) == 1


def test_camera_statefulset_shards() -> None:
    sts = one("StatefulSet", "vsr-cameras")
    env = {e["name"]: e.get("value") for e in container(sts)["env"]}
    # the replica count and the shard count are one number: a mismatch would leave cameras unowned
    assert int(env["VSR_SHARD_COUNT"]) == sts["spec"]["replicas"]
    assert "VSR_SHARD_INDEX" not in env  # the ordinal of the pod's host name is the index
    headless = one("Service", sts["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    pdb = one("PodDisruptionBudget", "vsr-cameras")
    assert pdb["spec"]["maxUnavailable"] == 1
    mounts = {m["mountPath"]: m["name"] for m in container(sts)["volumeMounts"]}
    assert mounts[str(Path(env["VSR_STREAMS_FILE"]).parent)] == "cameras"


def test_gpu_limits_probes_and_non_root() -> None:
    from service.app import create_app
    from service.settings import Settings

    routes = set(create_app(Settings()).openapi()["paths"])
    for w in workloads():
        c, pod = container(w), w["spec"]["template"]["spec"]
        assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
        assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
        assert {c[p]["httpGet"]["path"] for p in ("startupProbe", "livenessProbe", "readinessProbe")} <= routes
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert ":" in c["image"] and not c["image"].endswith(":latest")


def test_hpa_scales_the_deployment_on_an_exported_metric() -> None:
    from prometheus_client import CollectorRegistry

    from service.metrics import Metrics

    hpa = one("HorizontalPodAutoscaler", "vsr-upscale")
    ref = hpa["spec"]["scaleTargetRef"]
    dep = one(ref["kind"], ref["name"])
    assert dep["kind"] == "Deployment" and hpa["spec"]["minReplicas"] >= 1
    registry = CollectorRegistry()
    Metrics(registry)
    exported = {m.name for m in registry.collect()}
    adapter = yaml.safe_load(objects(K8S / "prometheus-adapter" / "rules.yaml")[0]["data"]["config.yaml"])
    served = {r["name"]["as"] for r in adapter["rules"]}
    for m in hpa["spec"]["metrics"]:
        name = m["pods"]["metric"]["name"]
        assert name in exported, f"the HPA scales on {name}, which the service does not export"
        assert name in served, f"prometheus-adapter does not serve {name}"
    for rule in adapter["rules"]:
        assert re.match(r"^\w+", rule["seriesQuery"]).group(0) in exported  # type: ignore[union-attr]
        assert "<<.LabelMatchers>>" in rule["metricsQuery"]


@pytest.mark.parametrize("workload", ["StatefulSet/vsr-cameras", "Deployment/vsr-upscale"])
def test_pod_environment_is_valid_service_settings(
    workload: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each pod's VSR_* environment (ConfigMap + its own env) parses as the service's Settings; for a camera pod the
    host name gives the shard, and its cameras file loads."""
    from service.settings import Settings
    from service.sharding import Shard
    from service.streams.config import load_stream_specs

    kind, name = workload.split("/")
    w = one(kind, name)
    c = container(w)
    env: dict[str, str] = {}
    for src in c.get("envFrom", []):
        env |= one("ConfigMap", src["configMapRef"]["name"])["data"]
    env |= {e["name"]: e["value"] for e in c.get("env", [])}
    assert {k.removeprefix("VSR_").lower() for k in env} <= set(Settings.model_fields), "unknown VSR_* variable"
    volumes = {v["name"]: v for v in w["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in c["volumeMounts"]}
    # the key file lies in the mounted Secret (one key per line) — a placeholder copy stands in for it here
    keys_dir = str(Path(env["VSR_API_KEYS_FILE"]).parent)
    secret = one("Secret", mounts[keys_dir]["secret"]["secretName"])
    (tmp_path / "keys").write_text(secret["stringData"][Path(env["VSR_API_KEYS_FILE"]).name])
    env["VSR_API_KEYS_FILE"] = str(tmp_path / "keys")
    if kind == "StatefulSet":  # the cameras file lies in the mounted ConfigMap; a copy stands in for it here
        cameras_cm = one("ConfigMap", mounts[str(Path(env["VSR_STREAMS_FILE"]).parent)]["configMap"]["name"])
        (tmp_path / "cameras.yml").write_text(cameras_cm["data"][Path(env["VSR_STREAMS_FILE"]).name])
        env["VSR_STREAMS_FILE"] = str(tmp_path / "cameras.yml")
    for k in [k for k in os.environ if k.startswith("VSR_")]:
        monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(socket, "gethostname", lambda: f"{name}-{w['spec']['replicas'] - 1}")
    s = Settings()
    assert s.api_keys and s.device == "cuda" and s.host == "0.0.0.0"
    if kind == "StatefulSet":
        assert s.shard() == Shard(w["spec"]["replicas"] - 1, w["spec"]["replicas"])
        specs = load_stream_specs(None, s.streams_file)
        names = [sp.name for sp in specs]
        assert specs and all(names) and len(set(names)) == len(names), "cameras need unique names (they pick the shard)"
    else:  # stateless role: no cameras; video jobs in their own per-pod volume
        assert s.max_streams == 0 and s.shard_count == 1
        assert s.video_jobs_dir is not None and "emptyDir" in mounts[s.video_jobs_dir]
