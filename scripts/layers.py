"""The structure drawn from the imports (docs/architecture.md): arrows that run up or sideways between the layers,
module import circles, and the largest source files. ``python scripts/layers.py [REPO]``; exit 1 on a violation."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

# vsr at the bottom; training and service side by side (neither may import the other); bench above; CLI and scripts on top
LAYER = {"vsr": 0, "training": 1, "service": 1, "bench": 2, "vsr_cli": 3, "scripts": 3}
MAX_LINES = 400


def modules(root: Path) -> dict[str, Path]:
    out = {}
    for p in root.rglob("*.py"):
        rel = p.relative_to(root)
        if rel.parts[0] in LAYER and ".venv" not in rel.parts:
            out[".".join(rel.with_suffix("").parts).removesuffix(".__init__")] = p
    return out


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}  # `from pkg import module`
    return {t for t in found if t.split(".")[0] in LAYER}


def wrong_way(edges: dict[str, set[str]]) -> list[tuple[str, str]]:
    bad = []
    for a, targets in edges.items():
        pa = a.split(".")[0]
        for t in targets:
            pt = t.split(".")[0]
            if LAYER[pt] > LAYER[pa] or (LAYER[pt] == LAYER[pa] and pt != pa):
                bad.append((a, t))
    return sorted(bad)


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def main(root: Path) -> int:
    mods = modules(root)
    edges = {name: imports(p) for name, p in mods.items()}
    bad = wrong_way(edges)
    edges = {a: {t for t in ts if t in mods or "." not in t} for a, ts in edges.items()}  # drop `module.name`
    loops = circles({a: {t for t in ts if t in mods} for a, ts in edges.items()})
    sizes = sorted((len(p.read_text().splitlines()), str(p.relative_to(root))) for p in mods.values())
    print(f"arrows up or sideways: {len(bad)}")
    for a, t in bad:
        print(f"  {a} -> {t}")
    print(f"import circles: {len(loops)} {loops or ''}")
    print(f"largest source files: {sizes[-3:]}")
    return 1 if bad or loops or sizes[-1][0] > MAX_LINES else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else ".")))
