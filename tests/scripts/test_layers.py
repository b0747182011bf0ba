"""scripts/layers.py: the repository passes it, and each kind of violation planted in a small clean tree fails it."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from tests.support.env import REPO

# A small tree in the shape of the real one (a module -> its source), clean under every rule.
CLEAN = {
    "vsr/__init__.py": "",
    "vsr/images.py": "import numpy\n",
    "training/__init__.py": "",
    "training/loop.py": "import vsr.images\n",
    "service/__init__.py": "",
    "service/metrics.py": "import prometheus_client\n",
    "service/batcher.py": "from service.metrics import Metrics\n",
    "service/streams/__init__.py": "",
    "service/streams/manager.py": "from service.batcher import Batcher\nfrom service.urlpolicy import redact\n",
    "service/urlpolicy.py": "import socket\n",
    "service/videojobs.py": "from service.batcher import SubmitFn\n",
    "service/settings.py": "from service.streams.manager import StreamOptions\nimport pydantic_settings\n",
    "service/engine.py": "from service.settings import Settings\n",
    "service/errors.py": "import fastapi\nfrom service.streams.manager import UnknownStream\n",
    "service/submit.py": "from starlette.concurrency import run_in_threadpool\nfrom service.batcher import Batcher\n",
    "service/routes/__init__.py": "",
    "service/routes/upscale.py": "import fastapi\nfrom service.submit import infer\n",
    "service/routes/oip.py": "from service.submit import infer\n",
    "service/app.py": "from service.routes import oip, upscale\nfrom service.streams.manager import StreamManager\n",
    "vsr_cli/__init__.py": "",
    "vsr_cli/main.py": "import service.app\nimport training.loop\n",
}
# One violation each: (file, source to add, what the report must name).
PLANTED = {
    "streams-import-settings": (
        "service/streams/manager.py",
        "from service.settings import Settings",
        "service.streams.manager -> service.settings",
    ),
    "streams-import-engine-for-types": (
        "service/streams/manager.py",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from service.engine import Engine",
        "service.streams.manager -> service.engine",
    ),
    "batcher-imports-fastapi": (
        "service/batcher.py",
        "from fastapi import Request",
        "service.batcher -> fastapi.Request",
    ),
    "jobs-import-starlette": (
        "service/videojobs.py",
        "import starlette.responses",
        "service.videojobs -> starlette.responses",
    ),
    "streams-import-a-route": (
        "service/streams/manager.py",
        "from service.routes import oip",
        "service.streams.manager -> service.routes",
    ),
    "jobs-import-the-app": ("service/videojobs.py", "import service.app", "service.videojobs -> service.app"),
    "route-imports-route": (
        "service/routes/oip.py",
        "from service.routes.upscale import infer",
        "service.routes.oip -> service.routes.upscale",
    ),
    "vsr-imports-uvicorn": ("vsr/images.py", "import uvicorn", "vsr.images -> uvicorn"),
    "vsr-imports-service": ("vsr/images.py", "import service.metrics", "vsr.images -> service.metrics"),
    "training-imports-service": (
        "training/loop.py",
        "from service.engine import Engine",
        "training.loop -> service.engine",
    ),
    "unplaced-module": ("service/newthing.py", "import os", "service.newthing is not placed"),
    "circle": ("service/metrics.py", "import service.batcher", "import circles: 1"),
}


@pytest.fixture(scope="module")
def layers() -> ModuleType:
    spec = importlib.util.spec_from_file_location("vsr_layers_script", REPO / "scripts" / "layers.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_the_repository_passes(layers: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    assert layers.main(REPO) == 0, capsys.readouterr().out


def test_the_clean_tree_passes(layers: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert layers.main(write(tmp_path, CLEAN)) == 0, capsys.readouterr().out


@pytest.mark.parametrize("case", PLANTED)
def test_a_planted_violation_fails(layers: ModuleType, tmp_path: Path, capsys, case: str) -> None:  # type: ignore[no-untyped-def]
    rel, source, named = PLANTED[case]
    files = dict(CLEAN)
    files[rel] = files.get(rel, "") + source + "\n"
    assert layers.main(write(tmp_path, files)) == 1
    assert named in capsys.readouterr().out
