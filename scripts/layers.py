"""The structure drawn from the imports (docs/architecture.md): arrows that run up or sideways between the layers,
arrows that run up inside service/ (its own layer order, below), a web framework imported below the web layer, a
route importing another route, module import circles, and the largest source files.
``python scripts/layers.py [REPO]``; exit 1 on a violation."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

# vsr at the bottom; training and service side by side (neither may import the other); bench above; CLI and scripts on top
LAYER = {"vsr": 0, "training": 1, "service": 1, "bench": 2, "vsr_cli": 3, "scripts": 3}
MAX_LINES = 400
# Inside service/, lowest first: a module imports from its own rank or below. Prefixes, so a new module in
# service/streams/ is placed with its package; a new module elsewhere in service/ must be placed here (else reported).
SERVICE_RANKS = {
    # leaves
    "service.metrics": 0,
    "service.sharding": 0,
    "service.urlpolicy": 0,
    "service.jobstore": 0,
    "service.imaging": 0,
    "service.workload": 0,
    # the domain: inference queue, live streams, video jobs (given typed options and objects by the app factory)
    "service.batcher": 1,
    "service.streams": 1,
    "service.videojobs": 1,
    # configuration and the model
    "service.settings": 2,
    "service.engine": 2,
    "service.modelrefs": 2,
    "service.repository": 2,
    # the web layer: HTTP errors, request reading, dependencies, the shared request logic
    "service.errors": 3,
    "service.bodylimit": 3,
    "service.deps": 3,
    "service.uploads": 3,
    "service.submit": 3,
    "service.httpserver": 3,
    "service.oip_tensors": 3,
    "service.routes": 4,  # and no route imports another route
    "service.app": 5,  # the app factory: the wiring of everything above
    "service.main": 5,
}
WEB_RANK = 3
WEB_FRAMEWORKS = frozenset({"fastapi", "starlette", "uvicorn"})  # only the web layer and above may import these


def modules(root: Path) -> dict[str, Path]:
    out = {}
    for p in root.rglob("*.py"):
        rel = p.relative_to(root)
        if rel.parts[0] in LAYER and ".venv" not in rel.parts:
            out[".".join(rel.with_suffix("").parts).removesuffix(".__init__")] = p
    return out


def imports(path: Path) -> set[str]:
    """The project modules (and ``module.name`` pairs) that ``path`` imports."""
    return {t for t in all_imports(path) if t.split(".")[0] in LAYER}


def all_imports(path: Path) -> set[str]:
    """Every absolute import of ``path``, the standard library's and third parties' included."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}  # `from pkg import module`
    return found


def wrong_way(edges: dict[str, set[str]]) -> list[tuple[str, str]]:
    bad = []
    for a, targets in edges.items():
        pa = a.split(".")[0]
        for t in targets:
            pt = t.split(".")[0]
            if LAYER[pt] > LAYER[pa] or (LAYER[pt] == LAYER[pa] and pt != pa):
                bad.append((a, t))
    return sorted(bad)


def service_rank(module: str) -> int | None:
    """The rank of a module of service/ (longest matching prefix of :data:`SERVICE_RANKS`), None if unplaced."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        rank = SERVICE_RANKS.get(".".join(parts[:n]))
        if rank is not None:
            return rank
    return None


def inside_service(mods: dict[str, Path], edges: dict[str, set[str]]) -> list[str]:
    """Violations of service/'s own order: unplaced modules, arrows up, routes importing routes."""
    bad = []
    for a in sorted(m for m in mods if m.startswith("service.")):
        rank = service_rank(a)
        if rank is None:
            bad.append(f"{a} is not placed in SERVICE_RANKS (scripts/layers.py)")
            continue
        for t in sorted(edges.get(a, ())):
            t_rank = service_rank(t) if t.startswith("service.") else None
            if t_rank is not None and t_rank > rank:
                bad.append(f"{a} -> {t} (rank {rank} imports rank {t_rank})")
            route, target = a.split(".")[:3], t.split(".")[:3]
            if a.startswith("service.routes.") and t.startswith("service.routes.") and route != target:
                bad.append(f"{a} -> {t} (a route imports another route)")
    return bad


def web_below_the_web(mods: dict[str, Path]) -> list[str]:
    """Modules under the web layer (vsr/, training/, service/ below :data:`WEB_RANK`) importing a web framework."""
    bad = []
    for name, path in sorted(mods.items()):
        top = name.split(".")[0]
        rank = service_rank(name) if top == "service" else None
        if top in ("vsr", "training") or (rank is not None and rank < WEB_RANK):
            for t in sorted(all_imports(path)):
                if t.split(".")[0] in WEB_FRAMEWORKS:
                    bad.append(f"{name} -> {t}")
    return bad


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
    service = inside_service(mods, edges)
    web = web_below_the_web(mods)
    edges = {a: {t for t in ts if t in mods or "." not in t} for a, ts in edges.items()}  # drop `module.name`
    loops = circles({a: {t for t in ts if t in mods} for a, ts in edges.items()})
    sizes = sorted((len(p.read_text().splitlines()), str(p.relative_to(root))) for p in mods.values())
    print(f"arrows up or sideways: {len(bad)}")
    for a, t in bad:
        print(f"  {a} -> {t}")
    print(f"inside service/: {len(service)}")
    for line in service:
        print(f"  {line}")
    print(f"web framework below the web layer: {len(web)}")
    for line in web:
        print(f"  {line}")
    print(f"import circles: {len(loops)} {loops or ''}")
    print(f"largest source files: {sizes[-3:]}")
    return 1 if bad or service or web or loops or sizes[-1][0] > MAX_LINES else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else ".")))
