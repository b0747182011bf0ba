"""Resumable video transcoding: the output is written as durable segments, then joined without re-encoding.

Why segments: a long job on a CPU takes an hour; a kill or a power cut must not throw that work away. Each segment
is a complete, closed file (one H.264 encoder from an IDR frame to its flush, video only) of ``segment_frames``
consecutive input frames. Once a segment is closed it is fsync'd and handed to ``commit`` (the caller records it
durably); a segment that was being written when the process died is not recorded, so it is redone. To resume,
:func:`encode_segments` decodes the input again from its start and skips (without converting or upscaling) the
frames that the recorded segments hold: decoding is cheap next to the model, and counting decoded frames is exact
where a seek would land on a keyframe before the resume point. :func:`join_segments` then copies the segments'
packets into the final file (same encoder settings, so the same SPS/PPS) and the input's audio beside them, copied
or re-encoded as :func:`vsr.video.transcode` does.

Timestamps: each output frame keeps its input frame's pts (in the input stream's time base). MP4 edit lists can
shift a segment's timestamps when read back, so each segment records its first frame's pts and the join moves the
segment's packets to start there.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
from av.packet import Packet

from vsr.frames import NO_CAPS, CapExceeded, FrameCaps, FrameCounter, demux_frames
from vsr.video import EncodeOptions, ProgressFn, UpscaleFn, VideoError, _AudioPath, _codecs_for, _VideoPath


@dataclass(frozen=True)
class Segment:
    """One closed segment: ``frames`` input frames, first/last output pts in the input time base, size on disk."""

    path: str
    frames: int
    first_pts: int
    last_pts: int
    bytes: int

    def intact(self) -> bool:
        """The file is there with the size recorded at commit (a torn or lost file is redone, not joined)."""
        try:
            return os.path.getsize(self.path) == self.bytes
        except OSError:
            return False


@dataclass(frozen=True)
class SegmentPlan:
    """Where and how big: ``new_path(k)`` gives segment k's (empty, private) file."""

    segment_frames: int
    new_path: Callable[[int], Path]
    commit: Callable[[Segment], None]


def fsync_file(path: Path | str) -> None:
    """Flush a closed file and its folder entry to the disk (a power cut after this keeps both)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    dfd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class _SegmentWriter:
    def __init__(self, path: Path, vin: av.VideoStream, upscale: UpscaleFn, scale: int, opts: EncodeOptions) -> None:
        self.path = path
        self.out = av.open(str(path), "w")
        self.video = _VideoPath(vin, self.out, upscale, scale, _codecs_for(path)[0], opts)
        self.added = 0

    def add(self, frame: av.VideoFrame) -> None:
        self.added += 1
        self.video.add(frame)

    def close(self) -> Segment:
        self.video.flush()
        self.out.close()
        fsync_file(self.path)
        v = self.video
        assert v.first_pts is not None and v.last_pts is not None  # at least one frame went in
        return Segment(str(self.path), v.frames, v.first_pts, v.last_pts, os.path.getsize(self.path))

    def abort(self) -> None:
        with contextlib.suppress(av.error.FFmpegError):
            self.out.close()


def encode_segments(
    in_path: str | Path,
    upscale: UpscaleFn,
    *,
    scale: int,
    plan: SegmentPlan,
    done: list[Segment],
    opts: EncodeOptions | None = None,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    input_options: dict[str, str] | None = None,
    caps: FrameCaps = NO_CAPS,
) -> list[str]:
    """Encode the input's frames after those in ``done`` into new segments (each committed when closed); returns
    notes. Raises :class:`VideoError` (unreadable input, a cap broken, ``should_stop``)."""
    opts = opts or EncodeOptions()
    skip = sum(s.frames for s in done)
    last_pts = done[-1].last_pts if done else None
    encoded, notes, writer = skip, [], None
    try:
        with av.open(str(in_path), options=dict(input_options or {})) as src:
            if not src.streams.video:
                raise VideoError("the file has no video stream")
            vin = src.streams.video[0]
            vin.thread_type = "AUTO"
            counter = FrameCounter(caps, vin.time_base)
            for _packet, frames in demux_frames(src, vin, skip=av.error.InvalidDataError):
                if should_stop is not None and should_stop():
                    raise VideoError("cancelled")
                if frames is None:
                    notes.append("skipped an undecodable video packet")
                    continue
                for frame in frames:
                    counter.check(frame)
                    if counter.frames <= skip:
                        continue  # in a recorded segment already
                    if writer is None:
                        writer = _SegmentWriter(plan.new_path(len(done)), vin, upscale, scale, opts)
                        writer.video.last_pts = last_pts  # pts repair continues across segments
                    writer.add(frame)
                    if progress is not None:
                        progress(encoded + writer.video.frames, None)
                    if writer.added >= plan.segment_frames:
                        seg = writer.close()
                        writer, last_pts, encoded = None, seg.last_pts, encoded + seg.frames
                        done = [*done, seg]
                        plan.commit(seg)
            if writer is not None:
                seg = writer.close()
                writer = None
                plan.commit(seg)
    except av.error.FFmpegError as e:
        raise VideoError(f"transcoding failed: {e}") from None
    except CapExceeded as e:
        raise VideoError(str(e)) from None
    finally:
        if writer is not None:
            writer.abort()
    return notes


def _video_packets(segments: list[Segment], tb: Fraction) -> Iterator[Packet[Any]]:
    """The segments' packets in order, moved so each segment starts at its recorded first pts (``tb``: the input
    stream's time base, in which ``first_pts`` is counted)."""
    for seg in segments:
        with av.open(seg.path) as c:
            st = c.streams.video[0]
            assert st.time_base is not None
            want = round(Fraction(seg.first_pts) * tb / st.time_base)
            shift: int | None = None
            for p in c.demux(st):
                if p.dts is None or p.pts is None:
                    continue  # the demuxer's flush packet
                if shift is None:
                    shift = want - p.pts  # the first packet is the IDR: the segment's earliest pts
                p.pts, p.dts = p.pts + shift, p.dts + shift
                yield p


def _time(p: Packet[Any]) -> float:
    return float((p.dts if p.dts is not None else 0) * (p.time_base or 0))


def join_segments(
    segments: list[Segment],
    in_path: str | Path,
    out_path: str | Path,
    *,
    input_options: dict[str, str] | None = None,
) -> tuple[str, list[str]]:
    """Write ``out_path`` from the segments' video packets (copied) and ``in_path``'s first audio stream (copied, or
    re-encoded when the container refuses its codec). Returns (audio mode, notes); the file is fsync'd."""
    if not segments:
        raise VideoError("the input has no decodable video frames")
    out_path = Path(out_path)
    notes: list[str] = []
    try:
        with (
            av.open(str(in_path), options=dict(input_options or {})) as src,
            av.open(str(out_path), "w") as out,
            av.open(segments[0].path) as first,
        ):
            tb = src.streams.video[0].time_base
            assert tb is not None
            vout = out.add_stream_from_template(first.streams.video[0])
            audio = _AudioPath(src, out, _codecs_for(out_path)[1]) if src.streams.audio else None
            mode = audio.mode if audio is not None else "none"
            if audio is not None and audio.mode != "copied":
                notes.append(
                    f"audio codec {audio.in_stream.codec_context.name!r} cannot go into {out_path.suffix}; "
                    f"re-encoded to {mode.split(':')[1]}"
                )
            streams: list[Iterator[Packet[Any]]] = [_video_packets(segments, tb)]
            if audio is not None:
                streams.append(src.demux(audio.in_stream))
            # Interleave by time: the muxer would otherwise hold every packet of one stream waiting for the other.
            order = itertools.count()
            merged = heapq.merge(*[((_time(p), next(order), p) for p in s) for s in streams])
            for _t, _n, p in merged:
                if audio is not None and p.stream is audio.in_stream:
                    audio.handle(p)
                else:
                    p.stream = vout
                    out.mux(p)
            if audio is not None:
                audio.flush()
    except av.error.FFmpegError as e:
        raise VideoError(f"joining the segments failed: {e}") from None
    fsync_file(out_path)
    return mode, notes
