"""Recorded video: decode -> upscale -> encode, streaming (a few frames in memory at a time), shared by the service
(``POST /upscale/video``) and the offline CLI (``vsr upscale IN.mp4 OUT.mp4``, ``vsr_cli.video``).

- Output: H.264 yuv420p (VP9 for ``.webm``) with the input's frame count, frame rate and timestamps (each output
  frame carries its input frame's pts in the input stream's time base).
- Audio: the first audio stream's packets are copied without re-encoding when the output container accepts the
  codec; otherwise it is re-encoded to AAC (Opus for ``.webm``) and the report says so.
- The upscale step is injected: ``upscale(frames: uint8 NHWC RGB) -> uint8 NHWC RGB`` (the service passes its
  batcher, the CLI the model), so this module knows nothing about models or devices.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, cast

import av
import numpy as np
from av.packet import Packet

from vsr.frames import NO_CAPS, CapExceeded, FrameCaps, FrameCounter, demux_frames

log = logging.getLogger(__name__)

UpscaleFn = Callable[[np.ndarray], np.ndarray]
ProgressFn = Callable[[int, int | None], None]  # (frames done, frames expected or None)


class VideoError(ValueError):
    """The input is not a usable video (no video stream, undecodable, over a cap)."""


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: Fraction | None
    frames: int | None  # from the container header; may be absent or approximate
    duration_s: float | None
    audio_codec: str | None
    format: str

    @property
    def expected_frames(self) -> int | None:
        """The header's frame count, else duration x fps (Matroska/WebM headers carry no count)."""
        if self.frames and self.frames > 0:
            return self.frames
        if self.duration_s and self.duration_s > 0 and self.fps:
            return round(self.duration_s * float(self.fps))
        return None


@dataclass
class TranscodeReport:
    frames: int = 0
    width: int = 0
    height: int = 0
    fps: Fraction | None = None
    audio: str = "none"  # "none" | "copied" | "reencoded:aac" ...
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class EncodeOptions:
    """x264 settings: ``preset`` trades speed for size; ``crf`` 18 is visually lossless-ish."""

    crf: int = 18
    preset: str = "veryfast"
    batch: int = 4  # frames handed to ``upscale`` at once


# For files from untrusted users: only these demuxers, and no protocol but the local file itself (an uploaded
# playlist such as HLS or concat could otherwise make FFmpeg read other local files or fetch URLs).
SAFE_INPUT_OPTIONS = {
    "format_whitelist": "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,mpegts,avi",
    "protocol_whitelist": "file",
}


def probe(path: str | Path, input_options: dict[str, str] | None = None) -> VideoInfo:
    """Read the header (no decoding). Raises :class:`VideoError` when there is no video stream."""
    try:
        with av.open(str(path), options=dict(input_options or {})) as c:
            if not c.streams.video:
                raise VideoError("the file has no video stream")
            v = c.streams.video[0]
            dur = None
            if v.duration is not None and v.time_base is not None:
                dur = float(v.duration * v.time_base)
            elif c.duration is not None:
                dur = c.duration / av.time_base
            audio = c.streams.audio[0].codec_context.name if c.streams.audio else None
            fps = v.average_rate or v.guessed_rate
            return VideoInfo(
                width=v.codec_context.width,
                height=v.codec_context.height,
                fps=Fraction(fps) if fps else None,
                frames=v.frames or None,
                duration_s=dur,
                audio_codec=audio,
                format=c.format.name,
            )
    except av.error.FFmpegError as e:
        raise VideoError(f"not a readable video: {e}") from None


def _codecs_for(out_path: Path) -> tuple[str, str]:
    """(video encoder, audio fallback encoder) for the output container."""
    if out_path.suffix.lower() == ".webm":
        return "libvpx-vp9", "libopus"
    return "libx264", "aac"


class _AudioPath:
    """Copies (or, when the container refuses the codec, re-encodes) one audio stream."""

    def __init__(self, src: av.container.InputContainer, out: av.container.OutputContainer, fallback: str) -> None:
        self.in_stream = src.streams.audio[0]
        self.out = out
        self.resampler: av.AudioResampler | None = None
        self.out_stream: Any  # PyAV types add_stream's result as a union of stream kinds
        name = self.in_stream.codec_context.name
        if name in out.supported_codecs:
            self.out_stream = out.add_stream_from_template(self.in_stream)
            self.mode = "copied"
        else:
            rate = self.in_stream.codec_context.sample_rate or 48000
            if fallback == "libopus":
                rate = 48000
            self.out_stream = cast(Any, out.add_stream(fallback, rate=rate))
            self.out_stream.layout = "stereo"
            self.resampler = av.AudioResampler(format=self.out_stream.format.name, layout="stereo", rate=rate)
            self.mode = f"reencoded:{fallback}"

    def handle(self, packet: Packet[Any]) -> None:
        if self.mode == "copied":
            if packet.dts is None:  # flush packets
                return
            packet.stream = self.out_stream
            self.out.mux(packet)
            return
        frames: list[Any] = list(packet.decode()) if packet.size else []
        for frame in frames:
            frame.pts = None
            for rf in self.resampler.resample(frame):  # type: ignore[union-attr]
                self.out.mux(self.out_stream.encode(rf))

    def flush(self) -> None:
        if self.mode != "copied":
            for rf in self.resampler.resample(None):  # type: ignore[union-attr]
                self.out.mux(self.out_stream.encode(rf))
            self.out.mux(self.out_stream.encode(None))


class _VideoPath:
    """Batches decoded frames, upscales them, and encodes them with their original timestamps."""

    def __init__(
        self,
        in_stream: av.VideoStream,
        out: av.container.OutputContainer,
        upscale: UpscaleFn,
        scale: int,
        codec: str,
        opts: EncodeOptions,
    ) -> None:
        self.upscale, self.opts, self.out = upscale, opts, out
        rate = in_stream.average_rate or in_stream.guessed_rate or Fraction(25)
        self.stream: Any = cast(Any, out.add_stream(codec, rate=rate))
        w, h = in_stream.codec_context.width * scale, in_stream.codec_context.height * scale
        self.width, self.height = w - w % 2, h - h % 2  # yuv420p needs even sizes (crop one pixel when odd)
        self.stream.width, self.stream.height = self.width, self.height
        self.stream.pix_fmt = "yuv420p"
        self.stream.time_base = in_stream.time_base  # keep the input's timestamps exactly
        self.stream.codec_context.time_base = in_stream.time_base
        if codec == "libx264":
            self.stream.options = {"crf": str(opts.crf), "preset": opts.preset}
        else:
            self.stream.options = {"crf": str(opts.crf + 13), "b": "0", "deadline": "realtime", "cpu-used": "8"}
        self.pending: list[tuple[np.ndarray, int | None]] = []
        self.frames = 0
        self.first_pts: int | None = None
        self.last_pts: int | None = None

    def add(self, frame: Any) -> None:
        pts = frame.pts if frame.pts is not None else None
        self.pending.append((frame.to_ndarray(format="rgb24"), pts))
        if len(self.pending) >= self.opts.batch:
            self.run()

    def run(self) -> None:
        if not self.pending:
            return
        shapes = {f.shape for f, _ in self.pending}
        if len(shapes) > 1:  # a mid-stream resolution change: upscale frame by frame
            outs = [self.upscale(f[None])[0] for f, _ in self.pending]
        else:
            outs = list(self.upscale(np.stack([f for f, _ in self.pending])))
        for (_, pts), img in zip(self.pending, outs, strict=True):
            img = np.ascontiguousarray(img[: self.height, : self.width])
            vf = av.VideoFrame.from_ndarray(img, format="rgb24")
            if pts is None or (self.last_pts is not None and pts <= self.last_pts):
                pts = (self.last_pts + 1) if self.last_pts is not None else 0  # repair missing/non-monotonic pts
            vf.pts, self.last_pts = pts, pts
            if self.first_pts is None:
                self.first_pts = pts
            vf.time_base = self.stream.codec_context.time_base
            # reformat also covers a mid-stream resolution change (the encoder's size is fixed)
            self.out.mux(self.stream.encode(vf.reformat(width=self.width, height=self.height, format="yuv420p")))
            self.frames += 1
        self.pending.clear()

    def flush(self) -> None:
        self.run()
        self.out.mux(self.stream.encode(None))


def transcode(
    in_path: str | Path,
    out_path: str | Path,
    upscale: UpscaleFn,
    *,
    scale: int,
    opts: EncodeOptions = EncodeOptions(),
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    input_options: dict[str, str] | None = None,
    caps: FrameCaps = NO_CAPS,
) -> TranscodeReport:
    """Upscale ``in_path`` into ``out_path`` (container from its extension). Streams: holds ~``opts.batch`` frames.

    ``should_stop`` is polled once per packet; returning True aborts with :class:`VideoError` (e.g. a cancelled job).
    ``input_options`` go to ``av.open`` (pass :data:`SAFE_INPUT_OPTIONS` for untrusted files). Every decoded frame
    is checked against ``caps`` before it is converted or upscaled (:class:`VideoError` when one breaks them).
    """
    out_path = Path(out_path)
    info = probe(in_path, input_options)
    vcodec, afallback = _codecs_for(out_path)
    report = TranscodeReport(fps=info.fps)
    try:
        with av.open(str(in_path), options=dict(input_options or {})) as src, av.open(str(out_path), "w") as out:
            vin = src.streams.video[0]
            vin.thread_type = "AUTO"
            video = _VideoPath(vin, out, upscale, scale, vcodec, opts)
            audio = _AudioPath(src, out, afallback) if src.streams.audio else None
            if audio is not None:
                report.audio = audio.mode
                if audio.mode != "copied":
                    report.notes.append(
                        f"audio codec {audio.in_stream.codec_context.name!r} cannot go into {out_path.suffix}; "
                        f"re-encoded to {afallback}"
                    )
                    log.warning(report.notes[-1])
            others = [audio.in_stream] if audio else []
            counter = FrameCounter(caps, vin.time_base)
            for packet, frames in demux_frames(src, vin, *others, skip=av.error.InvalidDataError):
                if should_stop is not None and should_stop():
                    raise VideoError("cancelled")
                if audio is not None and packet.stream is audio.in_stream:
                    audio.handle(packet)
                    continue
                if frames is None:
                    report.notes.append("skipped an undecodable video packet")
                    continue
                for frame in frames:
                    counter.check(frame)
                    video.add(frame)
                    if progress is not None and video.pending == []:
                        progress(video.frames, info.expected_frames)
            video.flush()
            if audio is not None:
                audio.flush()
    except av.error.FFmpegError as e:
        raise VideoError(f"transcoding failed: {e}") from None
    except CapExceeded as e:
        raise VideoError(str(e)) from None
    report.frames, report.width, report.height = video.frames, video.width, video.height
    if progress is not None:
        progress(video.frames, video.frames)
    return report
