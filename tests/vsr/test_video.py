"""Recorded video: vsr.video.transcode and probe, on clips made with PyAV (the job API: tests/service/test_videojobs.py)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from tests.support.media import count_frames, make_clip
from vsr.video import SAFE_INPUT_OPTIONS, VideoError, probe, transcode


def nearest_x2(frames: np.ndarray) -> np.ndarray:
    return frames.repeat(2, axis=1).repeat(2, axis=2)


@pytest.mark.parametrize(
    ("src", "video", "audio"),
    [(".mp4", "libx264", "aac"), (".mkv", "libx264", "pcm_s16le"), (".webm", "libvpx-vp9", "libopus")],
)
def test_transcode_keeps_frames_timing_and_audio(tmp_path: Path, src: str, video: str, audio: str) -> None:
    clip = make_clip(tmp_path / f"in{src}", audio=audio, video=video)
    dst = ".mp4"
    out = tmp_path / f"out{dst}"
    seen: list[int] = []
    report = transcode(clip, out, nearest_x2, scale=2, progress=lambda d, t: seen.append(d))
    info = probe(out)
    assert (info.width, info.height) == (64, 48) and report.frames == 20
    assert count_frames(out)[0] == 20 and seen[-1] == 20
    assert info.audio_codec == audio.removeprefix("lib") and report.audio == "copied"
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.name == "h264" and c.streams.video[0].format.name == "yuv420p"
    if src == ".mp4":
        assert info.fps == 15
        assert count_frames(out)[1] == pytest.approx(count_frames(clip)[1], abs=1e-3)  # same timestamps


def test_audio_reencoded_when_container_refuses_it(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "in.mp4", audio="aac")
    report = transcode(clip, tmp_path / "out.webm", nearest_x2, scale=2)
    assert report.audio == "reencoded:libopus" and report.notes
    assert probe(tmp_path / "out.webm").audio_codec == "opus"


def test_untrusted_input_is_not_a_playlist(tmp_path: Path) -> None:
    evil = tmp_path / "evil.mp4"
    evil.write_text("#EXTM3U\n#EXTINF:1,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n")
    with pytest.raises(VideoError):
        probe(evil, SAFE_INPUT_OPTIONS)
