"""All streams of the service: created by the app's lifespan (``service.app``, which wires in the settings, the
engine's models and the batcher), capped, stopped on shutdown."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Mapping

import numpy as np

from service.batcher import SubmitFn
from service.metrics import Metrics
from service.sharding import Shard
from service.streams.auto import AUTO, INTERVAL_S, AutoModel
from service.streams.config import StreamOptions, StreamSpec
from service.streams.pipeline import Stream, StreamDeps, StreamSetup, never
from service.urlpolicy import CheckedUrl, UnresolvableHost, UrlPolicy, UrlRejected, redact

log = logging.getLogger(__name__)

PROBE_SOURCE = "auto-probe"  # the batcher source of the frames that re-time idle candidates


class TooManyStreams(Exception):
    """The concurrent-stream cap is reached; ``retry_after_s``: when a stopping stream's slot frees."""

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class UnknownStream(KeyError):
    """No stream with that id."""


class StreamConflict(ValueError):
    """A stream with that name exists."""


class UnknownModel(StreamConflict):
    """The stream asks for a model that is not loaded."""


class NotOwner(Exception):
    """Another replica's shard owns this camera: each camera runs on exactly one replica."""

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
        auto: AutoModel | None = None,
        takes_y: Callable[[str], bool] = never,
    ) -> None:
        """``auto``: the chooser of streams that name no model (or ``auto``); without it they get ``default_model``.
        ``takes_y``: models that get a frame's Y from the decoder's planes (:class:`StreamDeps`)."""
        self.submit, self.models, self.metrics = submit, dict(models), metrics
        self.auto = auto
        self.policy, self.opts, self.max_streams = policy, opts, max_streams
        self._default_model = default_model
        self._deps = StreamDeps(submit, metrics, opts, takes_y)
        self.shard = shard or Shard()
        self._streams: dict[str, Stream] = {}
        # Removed streams whose reader has not ended yet (it may sit in a network open/read up to its timeout).
        # They keep their slot: otherwise create/delete in a loop piles up readers, threads and connections.
        self._stopping: set[Stream] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._stop = threading.Event()
        if auto is not None:  # sources report size and rate once connected; costs move with load
            threading.Thread(target=self._auto_loop, name="streams:auto", daemon=True).start()

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
        the reader checks again before each connect attempt. Raises :class:`UrlRejected`,
        :class:`StreamConflict`, :class:`TooManyStreams`, :class:`NotOwner`.
        """
        if not self.shard.owns(key := camera_key(spec)):
            raise NotOwner(key, self.shard.owner(key), self.shard)
        model = spec.model or (AUTO if self.auto is not None else self.default_model)
        auto = model == AUTO and self.auto is not None
        if auto:
            assert self.auto is not None
            model = self.auto.choice.model if self.auto.choice else self.auto.candidates[-1]  # decided below
        elif model == AUTO:
            model = self.default_model
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
            setup = StreamSetup(
                spec, name, model, self.models[model], src=src, check=lambda: self._check(spec), publish=target
            )
            stream = Stream(setup, self._deps)
            stream.auto = auto
            self._streams[stream.id] = stream
        self.decide()
        stream.start()
        log.info("stream %s (%s) started: %s -> %s", stream.name, stream.id, redact(spec.url), model)
        if target is not None:
            log.info("stream %s published to %s", stream.name, target.redacted)
        return stream

    def switch_model(self, stream_id: str, model: str) -> Stream:
        """Move a running stream to another loaded model (or ``auto``) without reconnecting. Raises :class:`UnknownStream`,
        :class:`UnknownModel`, or :class:`StreamConflict` when a published stream would change its output size."""
        stream = self.get(stream_id)
        if model == AUTO and self.auto is not None:  # back to the automatic choice
            stream.auto = True
            self.decide()
            return stream
        models = self.models
        if model not in models:
            raise UnknownModel(f"unknown model {model!r}; loaded: {', '.join(models)}")
        if stream.publisher is not None and models[model] != stream.scale:
            raise StreamConflict(
                f"stream {stream.name!r} is published at x{stream.scale}; {model!r} is x{models[model]} (a published "
                "stream keeps its output size: remove and add it again)"
            )
        stream.auto = False  # named now: service.streams.auto no longer switches it
        stream.switch_model(model, "set by PATCH /stream/{id}", scale=models[model])
        return stream

    def decide(self) -> None:
        """Re-decide the model of the ``auto`` streams for the live streams' budget (``service.streams.auto``)."""
        if self.auto is not None:
            self.auto.decide(self.all())

    def _auto_loop(self) -> None:
        while not self._stop.wait(INTERVAL_S):
            try:
                self.decide()
                self._probe()
            except Exception:  # noqa: BLE001 - a failed decision keeps the current models; never end the loop
                log.exception("stream model auto: decision failed")

    def _probe(self) -> None:
        """Re-time an idle better candidate on one grey frame (``AutoModel.probe``) through the worker, as any frame
        (its runner's cost takes the measured time). The result is not used; a full queue means no probe this time."""
        assert self.auto is not None
        target = self.auto.probe(self.all())
        if target is None or target[0] not in self.models:
            return
        model, h, w = target
        try:
            channels = 1 if self._deps.takes_y(model) else 3  # the frames its streams would send
            fut = self.submit(np.full((h, w, channels), 128, np.uint8), model=model, source=PROBE_SOURCE)
        except Exception as e:  # noqa: BLE001 - QueueFull, OverBudget, closing: the probe waits for the next turn
            log.debug("stream model auto: no probe of %s (%s)", model, e)
            return
        fut.add_done_callback(lambda f: f.exception())  # retrieved: a failed probe is only a figure not taken
        log.debug("stream model auto: probing %s on a %dx%d frame", model, w, h)

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
        self.decide()
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
                log.error("configured stream %s not started: %s", camera_key(spec), e)

    def disconnect_viewers(self) -> None:
        """End every MJPEG response now (server shutdown: they would otherwise hold it until its grace timeout)."""
        for s in self.all():
            s.output.close()

    def close(self, timeout: float = 5.0) -> None:
        """Stop every stream (the app's shutdown)."""
        self._stop.set()
        with self._lock:
            self._closed = True
            streams, self._streams = list(self._streams.values()), {}
        for s in streams:
            s.stop()
        for s in streams:
            s.reap(timeout / max(len(streams), 1))
