"""``make audit`` (scripts/audit.py) fails only on known vulnerabilities that have a fix, on pip-audit's JSON."""

from __future__ import annotations

import importlib.util
import sys

from tests.support.env import REPO


def load_audit():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("vsr_audit_script", REPO / "scripts" / "audit.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def dep(name: str, *vulns: list[str], skip: str | None = None) -> dict:
    d: dict = {
        "name": name,
        "version": "1.0",
        "vulns": [{"id": f"V-{i}", "fix_versions": f} for i, f in enumerate(vulns)],
    }
    if skip:
        d = {"name": name, "skip_reason": skip}
    return d


def test_fails_only_on_fixable_vulnerabilities() -> None:
    audit = load_audit()
    assert audit.summarize({"dependencies": [dep("a"), dep("b")]})[0] == 0
    code, lines = audit.summarize({"dependencies": [dep("a", []), dep("b")]})  # known, no fix yet
    assert code == 0 and "no fix available yet" in "\n".join(lines)
    code, lines = audit.summarize({"dependencies": [dep("a", [], ["2.0"]), dep("b")]})
    assert code == 1 and "a 1.0: V-1 fixed in 2.0" in "\n".join(lines)


def test_nothing_audited_is_reported_and_fails_when_strict() -> None:
    audit = load_audit()
    report = {"dependencies": [dep("torch", skip="Dependency not found on PyPI: torch (2.13.0+cpu)")]}
    code, lines = audit.summarize(report)
    assert code == 0 and "AUDIT INCOMPLETE" in lines[-1] and "torch" in "\n".join(lines)
    assert audit.summarize(report, strict=True)[0] == 1
