"""All streams of the service: created by the app's lifespan, capped, stopped on shutdown."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from service.batcher import Batcher, SubmitFn
from service.metrics import Metrics
from service.sharding import Shard
from service.streams.config import StreamOptions, StreamSpec, load_stream_specs
from service.streams.pipeline import Stream
from service.urlpolicy import CheckedUrl, UnresolvableHost, UrlPolicy, UrlRejected, policy_from, redact

if TYPE_CHECKING:  # the engine and the settings import the stream config
    from service.engine import Engine
    from service.settings import Settings

log = logging.getLogger(__name__)


class TooManyStreams(Exception):
    """The concurrent-stream cap is reached (429); ``retry_after_s``: when a stopping stream's slot frees."""

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class UnknownStream(KeyError):
    """No stream with that id (404)."""


class StreamConflict(ValueError):
    """A stream with that name exists (409)."""


class UnknownModel(StreamConflict):
    """The stream asks for a model that is not loaded (422)."""


class NotOwner(Exception):
    """Another replica's shard owns this camera (409): each camera runs on exactly one replica."""

    def __init__(self, camera: str, owner: int, shard: Shard) -> None:
        super().__init__(
            f"camera {camera!r} belongs to shard {owner} of {shard.count}; this replica is shard {shard.index} "
            f"(add it on replica {owner}, or list it in the cameras file that every replica reads)"
        )
        self.owner = owner


def camera_key(spec: StreamSpec) -> str:
    """What decides a camera's shard: its name, else its URL without the password (a rotated password must not
    move the camera)."""
    return spec.name or redact(spec.url)


class StreamManager:
    """Owns every :class:`Stream`. ``models`` maps a model name to its scale; ``submit`` is ``Batcher.submit``."""

    def __init__(
        self,
        *,
        submit: SubmitFn,
        models: Mapping[str, int],
        metrics: Metrics,
        policy: UrlPolicy,
        opts: StreamOptions,
        max_streams: int = 8,
        default_model: str | None = None,
        shard: Shard | None = None,
    ) -> None:
        self.submit, self.models, self.metrics = submit, dict(models), metrics
        self.policy, self.opts, self.max_streams = policy, opts, max_streams
        self._default_model = default_model
        self.shard = shard or Shard()
        self._streams: dict[str, Stream] = {}
        # Removed streams whose reader has not ended yet (it may sit in a network open/read up to its timeout).
        # They keep their slot: otherwise create/delete in a loop piles up readers, threads and connections.
        self._stopping: set[Stream] = set()
        self._lock = threading.Lock()
        self._closed = False

    @property
    def default_model(self) -> str:
        """The model of a stream that names none (``VSR_STREAM_MODEL``, x2-camera by default), else the first."""
        return self._default_model or next(iter(self.models))

    def set_models(self, models: Mapping[str, int]) -> None:
        """The loaded models (name -> scale) changed (the model repository loaded or unloaded one)."""
        self.models = dict(models)

    def add(self, spec: StreamSpec, *, wait_for_dns: bool = False) -> Stream:
        """Check the URL (resolves DNS: call from a worker thread, not the event loop), then start the stream.

        ``wait_for_dns``: a host that does not resolve yet (a camera container still starting) is not an error;
        the reader checks again before each connect attempt. Raises :class:`UrlRejected` (400/403),
        :class:`StreamConflict`, :class:`TooManyStreams`, :class:`NotOwner`.
        """
        if not self.shard.owns(key := camera_key(spec)):
            raise NotOwner(key, self.shard.owner(key), self.shard)
        model = spec.model or self.default_model
        if model not in self.models:
            raise UnknownModel(f"unknown model {model!r}; loaded: {', '.join(self.models)}")
        # the publish target first: it is never waited for (a typo should fail the request, not retry forever)
        target = self.policy.check(spec.publish, publish=True) if spec.publish else None
        src: CheckedUrl | None
        try:
            src = self._check(spec)
        except UnresolvableHost as e:
            if not wait_for_dns:
                raise
            log.warning("stream %s: %s; will retry", spec.name or redact(spec.url), e)
            src = None
        with self._lock:
            if self._closed:
                raise TooManyStreams("the service is shutting down")
            if len(self._streams) + len(self._stopping) >= self.max_streams:
                stopping = f" ({len(self._stopping)} still stopping)" if self._stopping else ""
                raise TooManyStreams(
                    f"at most {self.max_streams} concurrent streams{stopping}",
                    retry_after_s=math.ceil(self.teardown_bound_s()) if self._stopping else 10,
                )
            name = spec.name or self._free_name()
            if any(s.name == name for s in self._streams.values()):
                raise StreamConflict(f"a stream named {name!r} exists")
            stream = Stream(
                spec,
                src,
                name=name,
                model=model,
                scale=self.models[model],
                submit=self.submit,
                metrics=self.metrics,
                opts=self.opts,
                check=lambda: self._check(spec),
                publish=target,
            )
            self._streams[stream.id] = stream
        stream.start()
        log.info("stream %s (%s) started: %s -> %s", stream.name, stream.id, redact(spec.url), model)
        if target is not None:
            log.info("stream %s published to %s", stream.name, target.redacted)
        return stream

    def switch_model(self, stream_id: str, model: str) -> Stream:
        """Move a running stream to another loaded model without reconnecting. Raises :class:`UnknownStream`,
        :class:`UnknownModel`, or :class:`StreamConflict` when a published stream would change its output size."""
        stream = self.get(stream_id)
        models = self.models
        if model not in models:
            raise UnknownModel(f"unknown model {model!r}; loaded: {', '.join(models)}")
        if stream.publisher is not None and models[model] != stream.scale:
            raise StreamConflict(
                f"stream {stream.name!r} is published at x{stream.scale}; {model!r} is x{models[model]} (a published "
                "stream keeps its output size: remove and add it again)"
            )
        stream.switch_model(model, models[model])
        return stream

    def _check(self, spec: StreamSpec) -> CheckedUrl:
        """The URL policy, then the transport policy (UDP only to allow-listed cameras)."""
        src = self.policy.check(spec.url)
        self.policy.check_transport(src, spec.transport)
        return src

    def _free_name(self) -> str:
        i = 1
        names = {s.name for s in self._streams.values()}
        while f"stream-{i}" in names:
            i += 1
        return f"stream-{i}"

    def get(self, stream_id: str) -> Stream:
        try:
            return self._streams[stream_id]
        except KeyError:
            raise UnknownStream(stream_id) from None

    def all(self) -> list[Stream]:
        return list(self._streams.values())

    def teardown_bound_s(self) -> float:
        """How long a stopped reader can take to end: it may be inside a network open or read (PyAV's timeouts)."""
        return max(self.opts.open_timeout_s, self.opts.read_timeout_s) + 1.0

    def remove(self, stream_id: str, join_timeout: float = 0.0) -> None:
        """Stop and forget a stream. Its slot stays taken until its threads have ended (within
        :meth:`teardown_bound_s`); ``join_timeout`` waits up to that long here."""
        with self._lock:
            stream = self._streams.pop(stream_id, None)
            if stream is not None:
                self._stopping.add(stream)
        if stream is None:
            raise UnknownStream(stream_id)
        stream.stop()
        if join_timeout and stream.join(join_timeout):
            self._reaped(stream, 0.0)
        else:  # the reader may sit in a network read up to its timeout: let it end off the caller's thread
            reap = threading.Thread(
                target=self._reaped, args=(stream, self.teardown_bound_s()), name=f"reap:{stream.name}", daemon=True
            )
            reap.start()
        log.info("stream %s (%s) removed", stream.name, stream.id)

    def _reaped(self, stream: Stream, timeout: float) -> None:
        stream.reap(timeout)
        with self._lock:
            self._stopping.discard(stream)

    def stopping(self) -> int:
        """Removed streams whose threads are still ending (they hold their slots)."""
        with self._lock:
            return len(self._stopping)

    def start_configured(self, specs: list[StreamSpec]) -> None:
        """Start this shard's streams of those listed in the settings; a bad entry is logged, not fatal."""
        if self.shard.count > 1:
            mine = [spec for spec in specs if self.shard.owns(camera_key(spec))]
            log.info(
                "shard %d of %d: %d of %d configured cameras are ours: %s",
                self.shard.index,
                self.shard.count,
                len(mine),
                len(specs),
                ", ".join(camera_key(spec) for spec in mine) or "none",
            )
            specs = mine
        for spec in specs:
            try:
                self.add(spec, wait_for_dns=True)
            except (UrlRejected, StreamConflict, TooManyStreams) as e:
                log.error("configured stream %s not started: %s", spec.name or spec.url, e)

    def disconnect_viewers(self) -> None:
        """End every MJPEG response now (server shutdown: they would otherwise hold it until its grace timeout)."""
        for s in self.all():
            s.output.close()

    def close(self, timeout: float = 5.0) -> None:
        """Stop every stream (the app's shutdown)."""
        with self._lock:
            self._closed = True
            streams, self._streams = list(self._streams.values()), {}
        for s in streams:
            s.stop()
        for s in streams:
            s.reap(timeout / max(len(streams), 1))


def start_streams(settings: Settings, engine: Engine, batcher: Batcher, metrics: Metrics) -> StreamManager:
    """The app lifespan's stream manager, with the cameras of ``VSR_STREAMS`` / ``VSR_STREAMS_FILE`` started."""
    manager = StreamManager(
        submit=batcher.submit,
        models={name: engine.scale(name) for name in engine.names},
        metrics=metrics,
        policy=policy_from(settings.stream_allow_cidrs, settings.stream_allow_file),
        opts=replace(settings.stream_options(), cuda=engine.device.type == "cuda"),
        max_streams=settings.max_streams,
        default_model=settings.model_for("stream", engine.names),
        shard=settings.shard(),
    )
    manager.start_configured(load_stream_specs(settings.streams, settings.streams_file))
    return manager
