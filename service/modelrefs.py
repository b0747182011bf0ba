"""Which loaded model a request means: a query's ``model=`` (or the default for its use), or an OIP path's
``{name}`` and ``{version}``. Raises domain errors; ``service.errors`` gives each its HTTP answer."""

from __future__ import annotations

from service.engine import Engine
from service.settings import ModelUse, Settings

VERSION = "1"  # artifacts have no versions; "1" is the only one (as the OIP metadata says)


class ModelNotLoaded(LookupError):
    """A request's parameter names a model that is not loaded (a bad parameter)."""


class ModelNotFound(LookupError):
    """An OIP path names a model that is not loaded (no such resource)."""


class VersionNotFound(LookupError):
    """An OIP path names a version other than the one every model has."""


def pick_model(settings: Settings, engine: Engine, requested: str | None, use: ModelUse) -> str:
    """``requested``, else the default model for ``use`` (``VSR_<USE>_MODEL``); :class:`ModelNotLoaded` unless
    that model is loaded."""
    name = requested or settings.model_for(use, engine.names)
    if name not in engine.models:
        raise ModelNotLoaded(f"unknown model {name!r}; loaded: {engine.names}")
    return name


def check_model(engine: Engine, name: str, version: str = VERSION) -> None:
    """:class:`ModelNotFound` unless ``name`` is loaded; :class:`VersionNotFound` unless ``version`` is its one."""
    if name not in engine.models:
        raise ModelNotFound(f"no model {name!r}; loaded: {engine.names}")
    if version != VERSION:
        raise VersionNotFound(f"model {name!r} has no version {version!r}; versions: ['1']")
