"""The model repository: models are data the service loads and unloads while it runs (Triton's repository API).

``VSR_MODEL_REPOSITORY`` is a folder of artifact folders; a folder's name is its model's name (its ``model.json``
must say the same name, as Triton's config must). The bundled models (``x2``, ``x4``, ``x2-camera``) are always
in the index and loadable; a repository folder with a bundled model's name is listed as unavailable. ``VSR_MODELS``
load at start (a repository name there means that folder); the rest load on request.

- **load** validates the artifact (``vsr.artifact.load_artifact``: metadata, weights, parameter count, scale) and
  warms it on the calling thread, never the worker's: until it is published in the engine no one else can see it,
  so a broken artifact fails its own request and harms nothing. Loading a loaded model reloads it (new weights from
  the folder, swapped in at once; queued frames run on the new ones).
- **unload** refuses a model that a stream, a video job or a default use still needs, then stops new work for it
  and waits for its frames in flight (``service.modelgate``) before it is dropped.
- **memory**: each loaded model holds its weights; loaded models may take at most ``MODEL_SHARE`` of the memory
  budget, and the batcher's budget for frames is what they leave.
- **names, never paths**: a name is one folder inside the repository; ``..``, absolute paths, separators and links
  resolving outside the repository are refused.

Domain errors only here; ``service.routes.repository`` maps them to HTTP.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from service.batcher import Batcher
from service.engine import Engine, LoadedModel
from vsr.artifact import META_NAME, ArtifactError, bundled_names, int8_ir, load_artifact, resolve
from vsr.engine import prepare
from vsr.runner import FrameRunner

if TYPE_CHECKING:
    from service.settings import Settings
    from service.streams.manager import StreamManager
    from service.videojobs import JobManager

log = logging.getLogger(__name__)

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # one path segment: no separator, never "." or ".."
MODEL_SHARE = 0.5  # of the memory budget that loaded models may hold; the rest is for frames
WARM_FRAME = (32, 48)  # LR frame a load runs once: kernel selection, and proof that the model runs at all
State = Literal["READY", "UNAVAILABLE", "LOADING", "UNLOADING"]


class RepositoryError(Exception):
    """Base of the repository's errors (each maps to one HTTP status in the web layer)."""


class BadModelName(RepositoryError):
    """Not a model name (a path, ``..``, a separator) or a link out of the repository."""


class ModelNotFound(RepositoryError):
    """No repository folder, bundled model or loaded model of that name."""


class BrokenArtifact(RepositoryError):
    """The folder is not a usable artifact (missing/invalid metadata or weights, or it fails to run)."""


class ModelOverBudget(RepositoryError):
    """Loading it would put the loaded models over their share of the memory budget."""


class ModelInUse(RepositoryError):
    """A stream, a video job or a default use needs the model."""


class UnloadTimeout(RepositoryError):
    """Frames of the model did not finish in time; the model stays loaded."""


@dataclass(frozen=True)
class IndexEntry:
    name: str
    state: State
    reason: str = ""
    version: str = "1"


InUse = Callable[[str], list[str]]  # model name -> who needs it ("stream gate-1", "video job 3f..", "default")


class ModelRepository:
    """Loads and unloads the engine's models by name. Thread-safe; one load or unload runs at a time."""

    def __init__(
        self,
        root: Path | None,
        *,
        engine: Engine,
        batcher: Batcher,
        budget_bytes: int,
        in_use: InUse = lambda _name: [],
        on_change: Callable[[dict[str, int]], None] = lambda _models: None,
        unload_timeout_s: float = 30.0,
    ) -> None:
        """``in_use(name)``: who still needs a model (an unload is refused while any); ``on_change``: told the
        loaded models (name -> scale) after each load and unload (the stream manager's list)."""
        self.root = root.resolve() if root is not None else None
        self.engine, self.batcher, self.in_use, self.on_change = engine, batcher, in_use, on_change
        self.budget_bytes, self.unload_timeout_s = budget_bytes, unload_timeout_s
        self._lock = threading.Lock()  # one load/unload at a time (they are rare; warm-up is short)
        self._busy: dict[str, State] = {}
        self._failed: dict[str, str] = {}  # the last load error of a name, for the index
        self._apply_budget()

    # ---- names -> folders --------------------------------------------------------------------------------------

    def folder(self, name: str) -> Path | None:
        """The repository folder of ``name`` (None when there is none). Raises :class:`BadModelName` for anything
        but a plain name, or a folder that resolves (through links) outside the repository."""
        if not NAME.fullmatch(name) or name in (".", ".."):
            raise BadModelName(f"{name!r} is not a model name (letters, digits, '.', '_', '-'; no paths)")
        if self.root is None or name in bundled_names():
            return None
        path = self.root / name
        if not path.exists():
            return None
        real = path.resolve()
        if not real.is_relative_to(self.root) or real == self.root:
            raise BadModelName(f"{name!r} links outside the model repository")
        return real if real.is_dir() else None

    def _names(self) -> list[str]:
        found: set[str] = set(bundled_names()) | set(self.engine.names)
        if self.root is not None and self.root.is_dir():
            found |= {p.name for p in self.root.iterdir() if NAME.fullmatch(p.name) and (p / META_NAME).exists()}
        return sorted(found)

    # ---- the API -----------------------------------------------------------------------------------------------

    def index(self, *, ready_only: bool = False) -> list[IndexEntry]:
        out = []
        for name in self._names():
            if (busy := self._busy.get(name)) is not None:
                entry = IndexEntry(name, busy)
            elif name in self.engine.models:
                entry = IndexEntry(name, "READY")
            elif name in bundled_names() and self.root is not None and (self.root / name).exists():
                entry = IndexEntry(
                    name,
                    "UNAVAILABLE",
                    "loaded from the bundled models (a repository folder cannot take a bundled model's name)",
                )
            else:
                entry = IndexEntry(name, "UNAVAILABLE", self._failed.get(name, "unloaded"))
            if entry.state == "READY" or not ready_only:
                out.append(entry)
        return out

    def load(self, name: str) -> LoadedModel:
        """Validate, warm (on this thread) and publish ``name``; a loaded one is reloaded from its folder."""
        folder = self.folder(name)
        if folder is None and name not in bundled_names():
            raise ModelNotFound(f"no model {name!r} in the repository or the bundled models")
        with self._lock:
            self._busy[name] = "LOADING"
            try:
                lm, runner = self._open(name, folder)
                self._check_budget(lm)
                self.engine.add_model(lm, runner)
                self._changed()
                self._failed.pop(name, None)
            except BrokenArtifact as e:
                self._failed[name] = str(e)
                raise
            finally:
                del self._busy[name]
        log.info("model %s loaded (%s x%d, %d params)", name, lm.meta.arch, lm.meta.scale, lm.meta.parameters)
        return lm

    def unload(self, name: str) -> None:
        """Refuse while something needs it, else stop new work, wait for work in flight, drop it."""
        self.folder(name)  # refuses paths
        with self._lock:
            if name not in self.engine.models:
                raise ModelNotFound(f"model {name!r} is not loaded")
            users = self.in_use(name)
            if len(self.engine.models) == 1:
                users.append("the service (its last model)")
            if users:
                raise ModelInUse(f"model {name!r} is in use by {', '.join(users)}; switch them first")
            self._busy[name] = "UNLOADING"
            try:
                if not self.batcher.gate.retire(name, self.unload_timeout_s):
                    raise UnloadTimeout(f"frames of {name!r} still running after {self.unload_timeout_s:.0f} s")
                self.engine.remove_model(name)
                self._changed()
            finally:
                self.batcher.gate.reinstate(name)
                del self._busy[name]
        log.info("model %s unloaded", name)

    # ---- internals ---------------------------------------------------------------------------------------------

    def _open(self, name: str, folder: Path | None) -> tuple[LoadedModel, FrameRunner]:
        source = str(folder) if folder is not None else name
        try:
            folder_path = resolve(source)
            model, meta = load_artifact(folder_path, device="cpu")
            int8 = int8_ir(folder_path, meta)  # its int8 IR, when it carries one that passed its check at export
        except Exception as e:  # noqa: BLE001 - ArtifactError, or whatever a corrupt file makes safetensors/torch raise
            raise BrokenArtifact(f"model {name!r}: {e}") from None
        if meta.name != name:
            raise BrokenArtifact(f"model {name!r}: its {META_NAME} names it {meta.name!r} (they must agree)")
        eng = self.engine
        lm = LoadedModel(name, prepare(model, eng.device, eng.dtype), meta, source, int8)
        runner = eng.new_runner(lm)
        frame = np.zeros((1, *WARM_FRAME, 3), np.uint8)
        try:
            out = runner(frame)
        except Exception as e:  # noqa: BLE001 - any failure of its first run means the artifact is unusable
            raise BrokenArtifact(f"model {name!r} does not run: {e}") from None
        want = (1, WARM_FRAME[0] * meta.scale, WARM_FRAME[1] * meta.scale, 3)
        if out.shape != want:
            raise BrokenArtifact(f"model {name!r} returns {out.shape} for {frame.shape}, expected {want}")
        if eng.device.type == "cuda":
            torch.cuda.synchronize(eng.device)
        return lm, runner

    def models_bytes(self, replacing: str | None = None) -> int:
        return sum(self.engine.model_bytes(n) for n in self.engine.names if n != replacing)

    def _check_budget(self, lm: LoadedModel) -> None:
        new = sum(t.numel() * t.element_size() for t in (*lm.model.parameters(), *lm.model.buffers()))
        held = self.models_bytes(replacing=lm.name)
        cap = int(self.budget_bytes * MODEL_SHARE)
        if held + new > cap:
            raise ModelOverBudget(
                f"model {lm.name!r} needs {new / 2**20:.2f} MiB; loaded models hold {held / 2**20:.2f} MiB of "
                f"{cap / 2**20:.2f} MiB ({MODEL_SHARE:.0%} of the memory budget): unload one first"
            )

    def _changed(self) -> None:
        self._apply_budget()
        self.on_change({n: self.engine.scale(n) for n in self.engine.names})

    def _apply_budget(self) -> None:
        """The batcher's budget for frames: the memory budget less what the loaded models hold."""
        if self.batcher.budget is not None:
            self.batcher.budget = max(1, self.budget_bytes - self.models_bytes())


def repository_entry(root: Path | None, entry: str) -> str:
    """What ``Engine.load`` opens for a ``VSR_MODELS`` entry: the repository folder when the entry names one (not
    a bundled model's name), else the entry itself (a bundled name or a path, resolved as before)."""
    if root is None or not NAME.fullmatch(entry) or entry in (".", "..") or entry in bundled_names():
        return entry
    path = root / entry
    if not path.is_dir():
        return entry
    if not path.resolve().is_relative_to(root.resolve()):
        raise BadModelName(f"VSR_MODELS: {entry!r} links outside the model repository")
    try:
        named = json.loads((path / META_NAME).read_text()).get("name")
    except (OSError, ValueError, AttributeError):
        return str(path)  # the engine's load reports what is wrong with it
    if named != entry:  # as a load would refuse it: the service must not serve it under another name
        raise ArtifactError(f"VSR_MODELS: {path / META_NAME} names the model {named!r}, its folder {entry!r}")
    return str(path)


def in_use_by(settings: Settings, streams: StreamManager, jobs: JobManager) -> InUse:
    """``in_use`` of the service: its streams, queued/running video jobs, and the models the settings name."""

    def users(name: str) -> list[str]:
        found = [f"stream {s.name!r}" for s in streams.all() if s.model == name]
        found += [f"video job {job}" for job in jobs.using(name)]
        for use in ("image", "stream", "video"):
            if getattr(settings, f"{use}_model") == name:
                found.append(f"VSR_{use.upper()}_MODEL")
        if name == streams.default_model and settings.stream_model is None:
            found.append("new streams (the default stream model)")
        if streams.auto is not None and name in streams.auto.candidates:
            found.append("the stream model auto (one of its candidates)")
        return found

    return users
