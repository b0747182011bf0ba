"""Logging, configured once at the entry point: one JSON object per line off a terminal, readable text on one.

- Every logger goes through one handler on the root logger: ours, uvicorn's (``uvicorn.error`` and
  ``uvicorn.access``, which propagate because ``vsr serve`` runs uvicorn with ``log_config=None``) and Python's
  warnings (``logging.captureWarnings``), so nothing else writes lines of its own to the log stream.
- JSON via python-json-logger: a ``logging.Formatter``, so every existing ``logging.getLogger(__name__)`` call site
  and uvicorn's stdlib loggers work unchanged (structlog would need its own API plus a bridge for stdlib records).
  A traceback is the ``exc_info`` field of its record (one line, newlines escaped); uvicorn's access lines also
  carry ``client``, ``method``, ``path`` and ``status`` as fields.
- Logs go to stderr, so that a command whose product is on stdout (``vsr evaluate --json``) stays parseable.
- Credentials in URLs (user info, ``password=``/``token=``-like parameters) are redacted from every line.
- ``VSR_LOG_FORMAT`` (or ``--log-format``): ``json``, ``text`` or ``auto`` (json unless stderr is a terminal).
"""

from __future__ import annotations

import logging
import sys
from typing import IO, Literal

from pythonjsonlogger.json import JsonFormatter

from vsr.redact import redact_text

LogFormat = Literal["auto", "json", "text"]
FORMATS: tuple[str, ...] = ("auto", "json", "text")
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
JSON_FIELDS = ["asctime", "levelname", "name", "message"]
JSON_NAMES = {"asctime": "time", "levelname": "level", "name": "logger"}
ACCESS_FIELDS = ("client", "method", "path", "http_version", "status")


class AccessFields(logging.Filter):
    """uvicorn's access record has ``args`` = (client, method, path, http version, status): make them fields."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == len(ACCESS_FIELDS):
            for key, value in zip(ACCESS_FIELDS, args, strict=True):
                setattr(record, key, value)
        return True


class _VsrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Ours, so that configuring again replaces it (and leaves e.g. pytest's capture handlers alone).

    Every line it writes has its URLs redacted (``vsr.redact``): a message, an access path or a traceback that
    quotes a camera's URL never puts its password in the log."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record))


def resolve_format(fmt: str | None, stream: IO[str]) -> Literal["json", "text"]:
    """``json``/``text`` as asked; ``auto`` (or None): text on a terminal, else json. Raises ValueError."""
    fmt = (fmt or "auto").strip().lower()
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r}; use one of {', '.join(FORMATS)}")
    if fmt == "auto":
        isatty = getattr(stream, "isatty", None)
        return "text" if isatty is not None and isatty() else "json"
    return "json" if fmt == "json" else "text"


def formatter(fmt: Literal["json", "text"]) -> logging.Formatter:
    if fmt == "text":
        return logging.Formatter(TEXT_FORMAT)
    return JsonFormatter(JSON_FIELDS, rename_fields=JSON_NAMES, json_ensure_ascii=False, datefmt="%Y-%m-%dT%H:%M:%S%z")


def configure(level: str = "INFO", fmt: str | None = None, stream: IO[str] | None = None) -> Literal["json", "text"]:
    """Route every logger through one handler on ``stream`` (stderr) in ``fmt``; returns the format chosen.
    Raises ValueError on an unknown level or format (the CLI turns it into one ``error:`` line)."""
    stream = stream if stream is not None else sys.stderr
    chosen = resolve_format(fmt, stream)
    if not isinstance(logging.getLevelName(level.upper()), int):
        raise ValueError(f"unknown log level {level!r}; use DEBUG, INFO, WARNING or ERROR")
    handler = _VsrHandler(stream)
    handler.setFormatter(formatter(chosen))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _VsrHandler)]:  # ours from an earlier call only
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):  # no handlers of their own: one format for all
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, AccessFields) for f in access.filters):
        access.addFilter(AccessFields())
    logging.captureWarnings(True)
    return chosen
