"""docs/architecture.md stays true: its module table names every source file once, and names no file that is gone;
each walk's stated count of module boundaries matches the modules it lists."""

from __future__ import annotations

import re

from tests.support.env import REPO

DOC = REPO / "docs" / "architecture.md"
PACKAGES = ("vsr", "vsr_cli", "service", "training", "bench", "scripts")


def source_files() -> set[str]:
    return {
        p.relative_to(REPO).as_posix()
        for pkg in PACKAGES
        for p in (REPO / pkg).rglob("*.py")
        if p.name != "__init__.py" and "__pycache__" not in p.parts
    }


def table_rows() -> list[str]:
    """The module table's first cells (``| `path` | what |``)."""
    text = DOC.read_text()
    section = text.split("## Every module", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([^`]+\.py)` \|", section, flags=re.M)


def test_the_module_table_names_every_source_file_once() -> None:
    rows = table_rows()
    assert len(rows) == len(set(rows)), sorted({r for r in rows if rows.count(r) > 1})
    missing = source_files() - set(rows)
    gone = set(rows) - source_files()
    assert not missing, f"add to docs/architecture.md: {sorted(missing)}"
    assert not gone, f"remove from docs/architecture.md (no such file): {sorted(gone)}"


def test_each_walk_counts_its_boundaries() -> None:
    """A walk is a numbered list of steps, each naming its module first; consecutive steps in different modules are
    one boundary. The heading states the count."""
    text = DOC.read_text()
    walks = re.findall(r"^### Walk \d+: .*?(\d+) module boundaries\)\n(.*?)(?=\n### |\n## |\Z)", text, re.M | re.S)
    assert len(walks) == 3
    files = source_files()
    for stated, body in walks:
        steps = re.findall(r"^\d+\. `([^`]+\.py)`", body, flags=re.M)
        assert steps and all(s in files for s in steps), steps
        crossings = sum(1 for a, b in zip(steps, steps[1:], strict=False) if a != b)
        assert crossings == int(stated), (stated, steps)
