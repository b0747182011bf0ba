"""``PATCH /stream/{id} {"model": ...}``: a live (looping file) stream changes model without reconnecting. The
upscaled frames are compared with each model's plain forward on the clip's decoded frames: before the switch they
are the first model's, after it the second's; the reader (its thread, its counters) is the same one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import av
import numpy as np

from tests.support.checks import assert_error
from tests.support.live import Server, wait_until
from tests.support.media import make_clip
from tests.support.repository import reference, tiny_model


def decoded(clip: Path) -> np.ndarray:
    """Every frame of the clip as the stream's reader converts it (uint8 RGB)."""
    with av.open(str(clip)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def which(out: np.ndarray, refs: dict[str, np.ndarray]) -> set[str]:
    """The models whose output of some decoded frame equals ``out`` (up to rounding)."""
    return {
        name
        for name, per_frame in refs.items()
        if per_frame.shape[1:] == out.shape
        and min(int(np.abs(r.astype(int) - out.astype(int)).max()) for r in per_frame) <= 1
    }


def test_patch_switches_the_model_without_reconnecting(live_server: Callable[..., Server], tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    tiny_model(repo / "site-a", seed=11)
    tiny_model(repo / "site-b", seed=12, tail=0.3)
    clip = make_clip(tmp_path / "loop.mp4", w=32, h=24, fps=20, n=10, audio=None)
    frames = decoded(clip)
    refs = {name: reference(repo / name, frames) for name in ("site-a", "site-b")}
    assert not which(refs["site-a"][0], {"site-b": refs["site-b"]})  # the two models are told apart

    srv = live_server(
        model_repository=str(repo), models=["site-b", "site-a"], stream_allow_file=True, stream_budget=0.8
    )
    assert srv.app.state.streams.auto.budget_ms == 800  # VSR_STREAM_BUDGET reaches the auto chooser
    r = srv.client.post("/stream", json={"url": f"file://{clip}", "name": "loop", "model": "site-a"})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    stream = srv.app.state.streams.get(sid)
    reader = stream.capture.thread

    def newest() -> set[str]:
        latest = stream.output.latest
        return which(latest.rgb, refs) if latest is not None else set()

    assert wait_until(lambda: newest() == {"site-a"}, 20), newest()
    before = srv.client.get(f"/stream/{sid}").json()

    for bad in ("nope", "x4"):  # unknown; not loaded (bundled, but not loaded here)
        assert_error(srv.client.patch(f"/stream/{sid}", json={"model": bad}), 422, "invalid_model")
    assert_error(srv.client.patch(f"/stream/{sid}", json={"model": "site-b", "url": "x"}), 422)
    assert srv.client.get(f"/stream/{sid}").json()["model"] == "site-a"

    r = srv.client.patch(f"/stream/{sid}", json={"model": "site-b"})
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "site-b" and r.json()["id"] == sid
    assert wait_until(lambda: newest() == {"site-b"}, 20), newest()
    seen: list[int] = []

    def five_more_on_b() -> bool:  # every frame published from here on is the new model's
        latest = stream.output.latest
        if latest.seq not in seen:
            assert which(latest.rgb, refs) == {"site-b"}
            seen.append(latest.seq)
        return len(seen) >= 5

    assert wait_until(five_more_on_b, 20, step=0.01)
    after = srv.client.get(f"/stream/{sid}").json()
    assert stream.capture.thread is reader and reader.is_alive()  # the same reader: never reconnected
    assert after["reconnects"] == before["reconnects"] == 0
    assert after["frames_in"] > before["frames_in"] and after["frames_out"] > before["frames_out"]
    assert after["state"] == "live" and after["model"] == "site-b"

    # the model the stream left can go; the one it uses cannot (site-b is also the default of new streams)
    assert srv.client.post("/v2/repository/models/site-a/unload", json={}).status_code == 200
    assert_error(srv.client.post("/v2/repository/models/site-b/unload", json={}), 409, "model_in_use")
    assert_error(srv.client.patch(f"/stream/{sid}", json={"model": "site-a"}), 422, "invalid_model")  # unloaded
    assert srv.client.patch("/stream/nope", json={"model": "site-b"}).status_code == 404
    # back to the automatic choice (its one candidate here: the default stream model, site-b)
    r = srv.client.patch(f"/stream/{sid}", json={"model": "auto"})
    assert r.status_code == 200 and r.json()["model_choice"]["mode"] == "auto", r.text
    assert srv.client.get(f"/stream/{sid}").json()["model_choice"]["mode"] == "auto"
