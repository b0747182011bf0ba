"""``vsr serve``: settings from the environment (``VSR_*``), overridden by CLI flags; uvicorn runs the app."""

from __future__ import annotations

import argparse
import logging
import re
import signal
from typing import Any

from pydantic import ValidationError
from pydantic_settings import SettingsError

from service.jobstore import JobsDirUnusable, open_jobs_dir
from service.settings import Settings
from vsr.artifact import ArtifactError, resolve
from vsr.engine import DeviceError
from vsr.errors import UsageError

log = logging.getLogger(__name__)

CLI_FIELDS = ("host", "port", "models", "device")


def load_settings(args: argparse.Namespace) -> Settings:
    """Env first, then any CLI flag that was given (None means "use the environment / default")."""
    overrides = {k: v for k in CLI_FIELDS if (v := getattr(args, k, None)) is not None}
    return Settings(**overrides)


def describe_errors(e: ValidationError) -> str:
    """One line naming every bad setting, without echoing the values (they may hold API keys)."""
    parts = []
    for err in e.errors(include_input=False, include_url=False):
        field = ".".join(str(x) for x in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"VSR_{field.upper()}: {msg}" if field else msg)
    return "invalid settings: " + "; ".join(parts)


def describe_settings_error(e: SettingsError) -> str:
    """pydantic-settings' parse failure, named as the environment variable (the value is not echoed)."""
    field = re.search(r'field "(\w+)"', str(e))
    name = f"VSR_{field.group(1).upper()}" if field else "a VSR_* variable"
    return f"invalid settings: {name}: cannot parse the value (expected JSON)"


def cmd_serve(args: argparse.Namespace) -> int:
    """Bad settings or models raise :class:`UsageError` (the CLI prints one ``error:`` line, exit 2)."""
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE

    from service.app import create_app
    from service.httpserver import OneLineStartupErrors, guarded_protocol

    try:
        settings = load_settings(args)
    except ValidationError as e:
        raise UsageError(describe_errors(e)) from None
    except SettingsError as e:  # a value that is not even parseable (e.g. VSR_STREAMS='not json')
        raise UsageError(describe_settings_error(e)) from None
    try:  # a device that parses but is not here (cuda on a CPU host): refused before binding the port
        settings.torch_device()
    except DeviceError as e:
        raise UsageError(f"VSR_DEVICE: {e}") from None
    for entry in settings.models:  # fail fast with a clear message, before binding the port
        try:
            resolve(entry)
        except ArtifactError as e:
            raise UsageError(f"cannot serve model {entry!r}: {e}") from None
    if settings.video_jobs_dir:  # before any thread starts (a lifespan failure left the worker running: SIGABRT)
        try:
            open_jobs_dir(settings.video_jobs_dir)
        except JobsDirUnusable as e:
            raise UsageError(str(e)) from None
    app = create_app(settings)
    # uvicorn drains on SIGTERM/SIGINT, then re-raises the signal to the handler installed before it ran: make that
    # a clean exit, so a graceful stop ends with status 0 (orchestrators read death-by-signal as a crash).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_cleanly)
    # log_config=None: uvicorn's loggers propagate to the root handler `vsr` configured (one log format).
    config = uvicorn.Config(
        OneLineStartupErrors(app),
        host=settings.host,
        port=settings.port,
        log_config=None,
        timeout_graceful_shutdown=30,
        http=guarded_protocol(settings.http_header_timeout_s, settings.http_body_timeout_s),
    )
    server = uvicorn.Server(config)
    handle_exit = server.handle_exit

    def exit_and_end_viewers(sig: int, frame: Any) -> None:  # MJPEG responses never end by themselves
        if (streams := getattr(app.state, "streams", None)) is not None:
            streams.disconnect_viewers()
        handle_exit(sig, frame)

    server.handle_exit = exit_and_end_viewers  # type: ignore[method-assign]
    try:
        server.run()
    except SystemExit as e:  # uvicorn exits 3 when start-up fails (logged in one line): a settings error here
        if e.code == STARTUP_FAILURE:
            return 2
        raise
    return 0


def _exit_cleanly(signum: int, _frame: object) -> None:
    log.info("stopped by %s", signal.Signals(signum).name)
    raise SystemExit(0)
