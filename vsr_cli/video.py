"""``vsr upscale IN.mp4 OUT.mp4``: a video file through the shared engine (``vsr.engine``), with progress
(``vsr.progress``: a bar on a terminal, JSON log lines off one).

Decoding, batching, encoding and audio are ``vsr.video.transcode`` (the same code as ``POST /upscale/video``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from vsr.engine import Engine
from vsr.progress import bar as make_bar
from vsr.video import TranscodeReport, probe, transcode

log = logging.getLogger(__name__)


def upscale_video_file(
    in_path: str | Path, out_path: str | Path, engine: Engine, model: str, *, progress: bool = True
) -> TranscodeReport:
    """Upscale ``in_path`` into ``out_path`` with ``engine``'s ``model``."""
    bar = make_bar(total=probe(in_path).expected_frames, unit="frame", disable=not progress, desc=Path(in_path).name)

    def tick(done: int, total: int | None) -> None:
        bar.update(done - bar.n)

    try:
        report = transcode(
            in_path, out_path, lambda frames: engine.run(model, frames), scale=engine.scale(model), progress=tick
        )
    finally:
        bar.close()
    for note in report.notes:
        log.info(note)
    return report
