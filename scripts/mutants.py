"""Deliberate breakages the test suite must notice (mutation testing, kept small enough for CI).

Each mutant replaces one small snippet of the code with a broken version, in a temporary copy of the repository
(the files git tracks plus new ones it does not ignore), and runs only the tests that should catch it, with
PYTHONPATH at the copy. A mutant is *killed* when those tests fail, and *survives* when they pass (or skip). The
script exits 1 if any mutant survives, or if a mutant's snippet is no longer found exactly once in its file: a
refactor moved the code, and the mutant must be re-anchored rather than silently dropped. So snippets are short
and pick lines that state what the code does (a model call, a drain condition, ``optimizer.step()``), not layout;
a replacement imports what it uses, so that a mutant fails the tests by its behaviour, never by a NameError.

    python scripts/mutants.py            # every mutant, one at a time (`make mutants`; `make test` runs it)
    python scripts/mutants.py --check    # only check that every snippet still applies (no tests run)
    python scripts/mutants.py --only cli-bicubic --baseline   # one mutant; first run its tests unmutated
    python scripts/mutants.py --only runner-nearest --tests tests/service/test_oip.py   # which tests kill it

Tests are chosen as the fastest that catch each mutant without optional system packages (no RTSP server, no
FFmpeg, no browser), so the result is the same on a laptop and in CI.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEST_TIMEOUT_S = 180  # per mutant; a mutant that hangs a test is killed by pytest-timeout (counts as caught)


@dataclass(frozen=True)
class Mutant:
    name: str
    what: str  # the breakage, in words
    path: str  # file, relative to the repository root
    old: str  # the snippet replaced (must occur exactly once)
    new: str
    tests: tuple[str, ...]  # pytest node ids that must fail


MUTANTS = (
    Mutant(
        "cli-bicubic",
        "`vsr upscale` writes bicubic instead of the model's output",
        "vsr_cli/upscale.py",
        "        return model_output(engine.run(name, x[None])[0], decoded)\n",
        "        from vsr.imageops import bicubic_resize\n\n"
        "        rgb = decoded.rgb\n"
        "        return bicubic_resize(rgb, (rgb.shape[1] * scale, rgb.shape[0] * scale))\n",
        ("tests/vsr_cli/test_upscale.py::test_file",),
    ),
    Mutant(
        "batcher-close-no-drain",
        "Batcher.close(drain=True) drops the queued work instead of finishing it",
        "service/batcher.py",
        "            if self._closing and not self._drain:\n",
        "            if self._closing:\n",
        ("tests/service/test_service.py::test_shutdown_finishes_queued_work_with_the_models_output",),
    ),
    Mutant(
        "stream-list-500",
        "GET /stream answers 500",
        "service/routes/stream.py",
        '    """Every stream with its state and counters',  # the docstring's start: the body turns unreachable
        '    raise RuntimeError("mutant")\n    """Every stream with its state and counters',
        ("tests/service/streams/test_stream_e2e.py::test_never_answering_source",),
    ),
    Mutant(
        "videojob-nearest",
        "a video job returns nearest-neighbour frames instead of the model's",
        "service/videojobs.py",
        "            return np.stack([fut.result(timeout=FRAME_TIMEOUT_S) for fut in futures])\n",
        "            outs = [fut.result(timeout=FRAME_TIMEOUT_S) for fut in futures]\n"
        "            r = outs[0].shape[0] // frames.shape[1]\n"
        "            return np.stack([f.repeat(r, 0).repeat(r, 1) for f in frames])\n",
        ("tests/service/test_videojobs.py::test_video_job_round_trip[raw]",),
    ),
    Mutant(
        "no-optimizer-step",
        "training computes gradients but never steps the optimizer",
        "training/loop.py",
        "    state.optimizer.step()\n",
        "    pass  # mutant: no optimizer step\n",
        ("tests/training/test_distill.py::test_a_tiny_run_learns",),
    ),
    Mutant(
        "stream-frames-grey",
        "live stream frames are flat grey instead of the model's output",
        "service/streams/pump.py",
        "            out = fut.result()\n        except DeadlineExceeded:\n",
        "            out = np.full_like(fut.result(), 128)\n        except DeadlineExceeded:\n",
        ("tests/service/streams/test_stream_sources.py::test_configured_file_stream_and_http_mjpeg_source",),
    ),
    Mutant(
        "runner-nearest",
        "every model's output is a nearest-neighbour upscale (the shared frame runner, under every caller)",
        "vsr/runner.py",
        "        return out[0] if single else out\n",
        "        out = frames.repeat(self.scale, axis=1).repeat(self.scale, axis=2)\n"
        "        return out[0] if single else out\n",
        ("tests/service/test_upscale.py::test_output_is_the_models",),
    ),
)


def source_files(repo: Path) -> list[str]:
    """Tracked files plus untracked ones git does not ignore (so a working tree's new tests come along)."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=repo,
        capture_output=True,
        check=True,
    ).stdout
    return [p for p in out.decode().split("\0") if p and (repo / p).is_file()]


def copy_tree(repo: Path, dest: Path) -> None:
    for rel in source_files(repo):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / rel, target)


def applies(m: Mutant, root: Path) -> str | None:
    """None when the snippet occurs exactly once, else why not."""
    path = root / m.path
    if not path.is_file():
        return f"{m.path} does not exist"
    n = path.read_text().count(m.old)
    return None if n == 1 else f"its snippet occurs {n} times in {m.path} (expected once): re-anchor it"


def run_tests(root: Path, tests: tuple[str, ...]) -> tuple[int, str]:
    env = dict(os.environ, PYTHONPATH=str(root), PYTHONDONTWRITEBYTECODE="1")
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", f"--timeout={TEST_TIMEOUT_S}"]
    r = subprocess.run([*cmd, *tests], cwd=root, env=env, capture_output=True, text=True)
    return r.returncode, (r.stdout + r.stderr).strip().splitlines()[-1] if (r.stdout + r.stderr).strip() else ""


def run_mutant(m: Mutant, root: Path, baseline: bool) -> str:
    """'killed', 'survived', or 'error: ...'."""
    path = root / m.path
    original = path.read_text()
    if baseline:
        rc, last = run_tests(root, m.tests)
        if rc != 0:
            return f"error: its tests fail without the mutant ({last})"
    path.write_text(original.replace(m.old, m.new, 1))
    try:
        rc, last = run_tests(root, m.tests)
    finally:
        path.write_text(original)
    if rc == 1:
        return "killed"
    if rc == 0:
        return f"survived ({last})"
    return f"error: pytest exit {rc} ({last})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="only check that every mutant's snippet applies")
    ap.add_argument("--only", action="append", default=[], help="run only this mutant (repeatable)")
    ap.add_argument("--baseline", action="store_true", help="first run each mutant's tests unmutated")
    ap.add_argument("--list", action="store_true", help="list the mutants and their tests")
    ap.add_argument("--tests", nargs="+", help="run these tests (pytest node ids) instead of each mutant's own")
    args = ap.parse_args(argv)
    unknown = set(args.only) - {m.name for m in MUTANTS}
    if unknown:
        ap.error(f"unknown mutant(s) {sorted(unknown)}; known: {[m.name for m in MUTANTS]}")
    chosen = [m for m in MUTANTS if not args.only or m.name in args.only]
    if args.tests:
        chosen = [replace(m, tests=tuple(args.tests)) for m in chosen]
    if args.list:
        for m in chosen:
            print(f"{m.name}: {m.what}\n    {m.path}; tests: {' '.join(m.tests)}")
        return 0
    stale = {m.name: why for m in chosen if (why := applies(m, REPO))}
    for name, why in stale.items():
        print(f"mutant {name}: does not apply: {why}")
    if args.check:
        print(f"{len(chosen) - len(stale)} of {len(chosen)} mutants apply")
        return 1 if stale else 0
    failed = bool(stale)
    t_all = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="vsr-mutants-") as tmp:
        root = Path(tmp)
        copy_tree(REPO, root)
        for m in chosen:
            if m.name in stale:
                continue
            t0 = time.monotonic()
            result = run_mutant(m, root, args.baseline)
            failed |= result != "killed"
            print(f"mutant {m.name}: {result} in {time.monotonic() - t0:.0f} s  ({m.what})", flush=True)
    print(f"{len(chosen)} mutants in {time.monotonic() - t_all:.0f} s: {'FAILED' if failed else 'all killed'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
