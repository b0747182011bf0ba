"""Publishing a stream's upscaled frames as H.264 to a media server (RTSP, RTMP or SRT), e.g. MediaMTX, which fans
them out as RTSP/HLS/WebRTC to NVRs, players and browsers.

One thread per published stream (``publish:{name}``) takes the NEWEST upscaled frame from the stream's
:class:`~service.streams.output.FrameBroadcast`, encodes it with PyAV and pushes it. It never blocks the pipeline: when
the encoder or the network is slower than the stream, the frames it never got to are counted as dropped
(``publish``) and the publisher just carries on with the newest one. A connection that fails or breaks is retried
with backoff; the stream itself keeps running either way.

Encoder: ``auto`` picks NVIDIA's ``h264_nvenc`` when the service runs on CUDA and PyAV carries it, else ``libx264``
(``tune=zerolatency``: no B-frames, no look-ahead, each frame leaves at once). Rate control is CRF, or a target
bitrate when one is set; the GOP (keyframe interval, in frames) bounds how long a new viewer waits for a picture.
Timestamps are wall-clock milliseconds since the connection opened, so skipped frames leave gaps, not a fast-forward.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av

from service.streams.config import EncoderOptions
from service.streams.output import EncodedFrame, FrameBroadcast
from service.urlpolicy import CheckedUrl
from vsr.planes import Planes
from vsr.redact import redact_text

log = logging.getLogger(__name__)

H264_ENCODERS = ("auto", "libx264", "h264_nvenc")
MUXERS = {"rtsp": "rtsp", "rtmp": "flv", "srt": "mpegts"}
TIME_BASE = Fraction(1, 1000)
WAIT_S = 0.5  # how often an idle publisher checks for stop
BACKOFF_S = (0.5, 5.0)  # reconnect delay: first, max (doubling)


def pick_encoder(name: str, cuda: bool) -> str:
    if name != "auto":
        return name
    return "h264_nvenc" if cuda and "h264_nvenc" in av.codecs_available else "libx264"


def codec_options(encoder: str, opts: EncoderOptions) -> dict[str, str]:
    if encoder == "h264_nvenc":
        preset = opts.preset if opts.preset.startswith("p") else "p2"
        rc = {"rc": "cbr", "b": f"{opts.bitrate_kbps}k"} if opts.bitrate_kbps else {"rc": "vbr", "cq": str(opts.crf)}
        return {"preset": preset, "tune": "ll", "zerolatency": "1", **rc}
    rate = {"b": f"{opts.bitrate_kbps}k", "maxrate": f"{opts.bitrate_kbps}k", "bufsize": f"{opts.bitrate_kbps}k"}
    return {"preset": opts.preset, "tune": "zerolatency", **(rate if opts.bitrate_kbps else {"crf": str(opts.crf)})}


@dataclass
class PublishStats:
    state: str = "connecting"  # connecting | live | backoff | stopped
    frames: int = 0
    dropped: int = 0
    reconnects: int = 0
    last_error: str | None = None


class Publisher:
    """Pushes the newest frames of ``source`` to ``target``. ``on_sent(n)`` / ``on_dropped(n)`` count into the
    stream's metrics."""

    def __init__(
        self,
        name: str,
        target: CheckedUrl,
        source: FrameBroadcast,
        opts: EncoderOptions,
        *,
        cuda: bool = False,
        on_sent: Callable[[int], None] = lambda n: None,
        on_dropped: Callable[[int], None] = lambda n: None,
    ) -> None:
        self.name, self.target, self.source, self.opts = name, target, source, opts
        self.encoder = pick_encoder(opts.encoder, cuda)
        self.on_sent, self.on_dropped = on_sent, on_dropped
        self.stats = PublishStats()
        self._last_seq = -1  # the pipeline's sequence number of the last frame sent
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"publish:{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float) -> bool:
        if self._thread.ident is not None:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def info(self) -> dict[str, Any]:
        s = self.stats
        return {
            "url": self.target.redacted,
            "encoder": self.encoder,
            "state": s.state,
            "frames": s.frames,
            "dropped": s.dropped,
            "reconnects": s.reconnects,
            "last_error": s.last_error,
        }

    # -- the publisher thread --

    def _run(self) -> None:
        last_index, delay = None, BACKOFF_S[0]
        while not self._stop.is_set():
            frame = self.source.wait_newer_sync(self._last_seq, WAIT_S)
            if frame is None:
                if self.source.closed:
                    break
                continue
            try:
                last_index = self._session(frame, last_index)
                delay = BACKOFF_S[0]
            except (av.FFmpegError, OSError, ValueError) as e:
                error = self._describe(e)
                self.stats.state, self.stats.last_error = "backoff", error
                log.warning("stream %s: publishing to %s failed: %s", self.name, self.target.redacted, error)
                if self._stop.wait(delay):
                    break
                delay = min(delay * 2, BACKOFF_S[1])
                self.stats.reconnects += 1
        self.stats.state = "stopped"

    def _describe(self, e: Exception) -> str:
        """The error for the API and logs, without the target's credentials (FFmpeg's messages quote the URL)."""
        text = f"{type(e).__name__}: {e}"
        for secret in {self.target.connect_url, self.target.url}:
            text = text.replace(secret, self.target.redacted)
        return redact_text(text)

    def _session(self, first: EncodedFrame, last_index: int | None) -> int | None:
        """One connection: open at the first frame's size, push frames until stop, the source closes or the size
        changes (then the caller reconnects). Returns the output index of the last frame sent."""
        self.stats.state = "connecting"
        fmt = MUXERS[self.target.scheme]
        options = {**self.target.options, **({"rtsp_transport": "tcp"} if fmt == "rtsp" else {})}
        with av.open(self.target.connect_url, "w", format=fmt, options=options, timeout=(10.0, 10.0)) as out:
            stream = out.add_stream(self.encoder, options=codec_options(self.encoder, self.opts))
            assert isinstance(stream, av.VideoStream)
            stream.width, stream.height, stream.pix_fmt = first.width, first.height, "yuv420p"
            stream.codec_context.time_base = TIME_BASE
            stream.codec_context.gop_size = self.opts.gop
            t0, last_pts = time.monotonic(), -1
            frame: EncodedFrame | None = first
            while frame is not None and not self._stop.is_set():
                if (frame.width, frame.height) != (stream.width, stream.height):
                    break  # a new source size: reconnect with the new size
                if last_index is not None and frame.index > last_index + 1:
                    self.stats.dropped += frame.index - last_index - 1
                    self.on_dropped(frame.index - last_index - 1)
                last_pts = self._push(out, stream, frame, max(int((time.monotonic() - t0) * 1000), last_pts + 1))
                last_index, self._last_seq = frame.index, frame.seq
                frame = self._next(frame.seq)
            for packet in stream.encode(None):  # flush the encoder
                out.mux(packet)
        return last_index

    def _push(self, out: av.container.OutputContainer, stream: av.VideoStream, frame: EncodedFrame, pts: int) -> int:
        picture = frame.picture  # planes go to the encoder as they are (no RGB -> YUV conversion)
        if isinstance(picture, Planes):
            vf = av.VideoFrame.from_ndarray(picture.yuv420p(), format="yuv420p")
        else:
            vf = av.VideoFrame.from_ndarray(picture, format="rgb24")
        vf.pts, vf.time_base = pts, TIME_BASE
        for packet in stream.encode(vf):
            out.mux(packet)
        self.stats.state = "live"
        self.stats.frames += 1
        self.on_sent(1)
        return pts

    def _next(self, seq: int) -> EncodedFrame | None:
        while not self._stop.is_set():
            frame = self.source.wait_newer_sync(seq, WAIT_S)
            if frame is not None or self.source.closed:
                return frame
        return None
