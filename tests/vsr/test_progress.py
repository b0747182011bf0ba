"""Progress of long work (``vsr.progress``): a tqdm bar on a terminal; off one, no carriage-return bar but log
records — rate-limited (one per ``every_s`` and one at the end) with the counts as fields, each one JSON line
through ``vsr.logs``."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from tqdm import tqdm

from vsr import logs, progress


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="vsr.progress")
    return caplog


def test_off_a_terminal_logs_every_every_s_and_at_the_end(logged: pytest.LogCaptureFixture) -> None:
    records = logged.records  # the call phase's list (the setup phase has its own)
    clock = Clock()
    b = progress.LogProgress(total=100, desc="train", unit="step", every_s=30.0, clock=clock)
    for _ in range(10):  # 10 steps over 29 s: not yet a record
        clock.t += 2.9
        b.update(1)
    assert records == []
    clock.t += 1.0  # 30 s since the start, 11 steps
    b.update(1)
    assert len(records) == 1
    r = records[0]
    assert (r.progress, r.step, r.steps, r.unit) == ("train", 11, 100, "step")  # type: ignore[attr-defined]
    assert r.rate == pytest.approx(11 / 30, rel=1e-3) and r.eta_s == pytest.approx(89 / (11 / 30), abs=0.1)  # type: ignore[attr-defined]
    clock.t += 10.0
    b.update(5)  # 10 s after the last record: none
    assert len(records) == 1
    b.set_postfix(loss=0.5)
    b.close()
    b.close()  # once only
    assert len(records) == 2
    assert records[1].step == 16 and records[1].postfix == {"loss": "0.5"}  # type: ignore[attr-defined]
    assert "train: 16/100" in records[1].getMessage()


def test_a_resumed_run_rates_only_the_steps_it_did(logged: pytest.LogCaptureFixture) -> None:
    records = logged.records  # the call phase's list (the setup phase has its own)
    clock = Clock()
    b = progress.LogProgress(total=1000, desc="train", initial=900, every_s=10.0, clock=clock)
    clock.t += 10.0
    b.update(20)
    assert records[0].step == 920 and records[0].rate == pytest.approx(2.0)  # type: ignore[attr-defined]
    assert records[0].eta_s == pytest.approx(40.0)  # type: ignore[attr-defined]


def test_bar_is_tqdm_on_a_terminal_and_log_records_off_one(logged: pytest.LogCaptureFixture) -> None:
    records = logged.records  # the call phase's list (the setup phase has its own)
    tty = Tty()
    b = progress.bar(total=3, desc="tty", stream=tty)
    assert isinstance(b, tqdm)
    b.update(3)
    b.close()
    assert "\r" in tty.getvalue() and "3/3" in tty.getvalue()  # tqdm drew on the terminal

    pipe = io.StringIO()
    b = progress.bar(total=3, desc="pipe", stream=pipe)
    assert isinstance(b, progress.LogProgress)
    b.update(3)
    b.close()
    assert pipe.getvalue() == ""  # nothing drawn on the stream: the log handler has the record
    assert [(r.progress, r.step) for r in records] == [("pipe", 3)]  # type: ignore[attr-defined]

    silent = progress.bar(total=3, desc="off", disable=True, stream=pipe)
    silent.update(3)
    silent.close()
    assert pipe.getvalue() == "" and len(records) == 1


def test_track_yields_every_item_and_closes_on_the_way_out(logged: pytest.LogCaptureFixture) -> None:
    records = logged.records  # the call phase's list (the setup phase has its own)
    pipe = io.StringIO()
    assert list(progress.track(["a", "b", "c"], desc="files", unit="file", stream=pipe)) == ["a", "b", "c"]
    (r,) = records
    assert (r.step, r.steps, r.unit) == (3, 3, "file")  # type: ignore[attr-defined]

    def gen() -> Iterator[int]:
        yield from range(5)

    for i in progress.track(gen(), desc="broken", stream=pipe):
        if i == 1:
            break
    assert (records[-1].progress, records[-1].step, records[-1].steps) == ("broken", 1, None)  # type: ignore[attr-defined]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)


def test_a_record_is_one_json_line_with_the_counts(restore_logging: None) -> None:
    buf = io.StringIO()
    assert logs.configure("INFO", None, buf) == "json"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(progress.sys, "stderr", buf)  # the bar's stream is the log's: not a terminal
        for _ in progress.track(range(4), desc="eval", unit="image"):
            pass
    (line,) = [line for line in buf.getvalue().splitlines() if line]
    assert "\r" not in buf.getvalue()
    obj = json.loads(line)
    assert obj["logger"] == "vsr.progress" and obj["message"].startswith("eval: 4/4")
    assert (obj["progress"], obj["step"], obj["steps"], obj["unit"]) == ("eval", 4, 4, "image")
    assert obj["eta_s"] == 0.0 and obj["rate"] > 0
