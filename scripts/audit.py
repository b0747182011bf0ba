"""Dependency audit (``make audit``): ``pip-audit`` over the installed environment, failing only on known
vulnerabilities that have a fixed version to upgrade to (pip-audit itself fails on any finding and has no flag
for "fixable only", so this filters its JSON).

- ``--skip-editable``: vsr itself is installed editable and is not on PyPI.
- torch is installed as the local CPU wheel ``2.13.0+cpu``; a local version label is not on PyPI, so pip-audit
  reports it as not auditable (listed below) rather than auditing the CUDA build of the same version.
- A dependency that could not be audited (no network to the vulnerability service, not on PyPI) is listed; when
  nothing at all could be audited the result says so loudly (exit 0: no known vulnerability was found, but none
  could be looked up either) — set ``VSR_AUDIT_STRICT=1`` to make that an error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> int:
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "audit.json"
        cmd = [sys.executable, "-m", "pip_audit", "--local", "--skip-editable", "--progress-spinner", "off"]
        cmd += ["--format", "json", "--output", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if not out.exists():
            sys.stderr.write(proc.stdout + proc.stderr)
            return 2
        report = json.loads(out.read_text())
    code, lines = summarize(report, strict=os.environ.get("VSR_AUDIT_STRICT") == "1")
    print("\n".join(lines))  # noqa: T201
    return code


def summarize(report: dict, *, strict: bool = False) -> tuple[int, list[str]]:
    """pip-audit's JSON -> (exit code, lines): 1 on a fixable vulnerability (or nothing audited when strict)."""
    deps = report.get("dependencies", [])
    fixable, unfixable, skipped = [], [], []
    for dep in deps:
        if dep.get("skip_reason"):
            skipped.append(f"{dep['name']}: {dep['skip_reason']}")
        for v in dep.get("vulns", []):
            row = f"{dep['name']} {dep.get('version')}: {v['id']} fixed in {', '.join(v['fix_versions']) or '-'}"
            (fixable if v.get("fix_versions") else unfixable).append(row)
    audited = len(deps) - len(skipped)
    lines = [f"pip-audit: {audited} of {len(deps)} installed distributions audited"]
    for title, rows in (("FIXABLE (fails the audit)", fixable), ("no fix available yet", unfixable)):
        if rows:
            lines.append(f"{title}:\n  " + "\n  ".join(rows))
    if skipped:
        shown = skipped if len(skipped) <= 10 else [*skipped[:10], f"... and {len(skipped) - 10} more"]
        lines.append("not audited:\n  " + "\n  ".join(shown))
    if fixable:
        return 1, lines
    if audited == 0:
        lines.append("AUDIT INCOMPLETE: no distribution could be looked up (vulnerability service unreachable?)")
        return (1 if strict else 0), lines
    return 0, lines


if __name__ == "__main__":
    raise SystemExit(main())
