"""The Prometheus alert rules: valid (`promtool check rules`), loaded by the shipped config and compose, every rule
unit-tested with `promtool test rules` (tests/deploy/alerts_test.yml: each fires on the bad series and stays quiet
on the healthy ones), and every metric they use is one the service exports."""

from __future__ import annotations

import re
import subprocess

import yaml
from prometheus_client import CollectorRegistry, generate_latest

from service.metrics import Metrics
from tests.deploy.helpers import COMPOSE, PROMETHEUS_YML, compose_config, tool

ALERTS = PROMETHEUS_YML.parent / "alerts.yml"
UNIT_TESTS = PROMETHEUS_YML.parents[2] / "tests" / "deploy" / "alerts_test.yml"
WANTED = {"VsrNotReady", "VsrStreamFailed", "VsrQueueSaturated", "VsrRequestLatencyP99High", "VsrStreamLatencyP99High"}


def rules() -> list[dict]:
    return [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]


def test_promtool_checks_and_unit_tests_pass() -> None:
    exe = tool("promtool", "Debian prometheus")
    check = subprocess.run([exe, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    unit = subprocess.run([exe, "test", "rules", str(UNIT_TESTS)], capture_output=True, text=True, timeout=120)
    assert unit.returncode == 0 and "SUCCESS" in unit.stdout, unit.stdout + unit.stderr


def test_the_issue_alerts_exist_and_each_is_unit_tested() -> None:
    names = {r["alert"] for r in rules()}
    assert names >= WANTED, WANTED - names
    tested = {
        t["alertname"] for case in yaml.safe_load(UNIT_TESTS.read_text())["tests"] for t in case["alert_rule_test"]
    }
    assert tested == names
    for r in rules():
        assert r["labels"]["severity"] in ("critical", "warning") and r["annotations"]["summary"], r["alert"]


def test_alerts_use_only_exported_metrics() -> None:
    registry = CollectorRegistry()
    Metrics(registry)
    exported = generate_latest(registry).decode()
    families = set(re.findall(r"^# TYPE (\w+) (\w+)", exported, re.M))
    names = {n for n, _ in families} | {
        f"{n}_{s}" for n, t in families if t == "histogram" for s in ("bucket", "sum", "count")
    }
    names |= {f"{n}_total" for n, t in families if t == "counter"}
    used = set(re.findall(r"\b(vsr_\w+)\{", " ".join(r["expr"] for r in rules())))
    assert used and used <= names, used - names


def test_prometheus_loads_the_rules_in_compose() -> None:
    assert yaml.safe_load(PROMETHEUS_YML.read_text())["rule_files"] == ["alerts.yml"]
    mounts = {v["target"]: v["source"] for v in compose_config([COMPOSE])["services"]["prometheus"]["volumes"]}
    assert mounts["/etc/prometheus/alerts.yml"] == str(ALERTS.resolve())
