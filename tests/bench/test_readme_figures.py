"""The benchmark figures quoted in the README's prose are the ones in ``bench/results/*.json`` (bench/README.md is
generated from them; the README's summary is typed, so it is checked here): re-running a benchmark without updating
the README fails this test."""

from __future__ import annotations

import json
from typing import Any

from tests.support.env import REPO


def results(name: str, folder: str = "") -> Any:
    return json.loads((REPO / "bench" / "results" / folder / f"{name}.json").read_text())


def expected_figures() -> list[str]:
    """Each phrase of the README's benchmark summary that carries a number, rebuilt from the JSON."""
    rt, svc, streams = results("realtime-cpu"), results("service-cpu"), results("streams-cpu")
    cli = rt["file_to_file"]["vsr_upscale"]["fps_steady"]
    espcn = rt["file_to_file"]["opencv_espcn"]["fps"]
    at16 = {lv["variant"]: lv for lv in svc["sizes"][0]["levels"] if lv["clients"] == 16}
    default16, batch8, batch1 = at16["default"], at16["max batch 8"], at16["max batch 1"]
    no_runtime = at16["glibc + OpenMP defaults"]
    sat = svc["saturation"]
    row, two = streams["rows"][0], streams["rows"][1]
    return [
        f"`vsr upscale` file to file: {cli} fps vs OpenCV ESPCN {espcn} fps "
        f"({rt['ratios']['cli_steady/opencv_espcn_file']}×",
        f"already run at {rt['kernel_fraction_of_matmul_peak']:.2f}× this CPU's measured fp32 matmul rate",
        f"16 concurrent clients: {sat['fps']} fps = {sat['fps'] / cli:.2f}× the CLI and "
        f"{round(100 * sat['ratio_to_bare'])} % of the bare engine",
        f"are worth {default16['fps'] / no_runtime['fps']:.1f}× here; the CPU's batch of 2 (for cameras) gives stills "
        f"{default16['fps'] / batch1['fps']:.2f}× batch 1 and {default16['fps'] / batch8['fps']:.2f}× batch 8",
        f"{row['output_fps_total']} fps in the last run at load {streams['loadavg_start'][0]:.1f}",
        f"two such cameras at once: {two['viewer_fps'][0]} and {two['viewer_fps'][1]} fps at the viewers",
    ]


def amx_figures() -> list[str]:
    """The README's paragraph on the Intel Xeon with AMX (``bench/results/xeon-amx/``)."""
    rt, svc, streams, planes = (
        results(n, "xeon-amx") for n in ("realtime-cpu", "service-cpu", "streams-cpu", "planes-cpu")
    )
    rows = results("runtimes-cpu", "xeon-amx")["rows"]
    cli = rt["file_to_file"]["vsr_upscale"]["fps_steady"]
    espcn = rt["file_to_file"]["opencv_espcn"]["fps"]
    one, two = streams["rows"][0], streams["rows"][1]
    x2, fast = rows["x2 openvino/int8"]["ms_per_frame"], rows["x2-camera-fast openvino/int8"]["ms_per_frame"]
    return [
        f"{cli} fps vs OpenCV ESPCN {espcn} fps ({rt['ratios']['cli_steady/opencv_espcn_file']}×, target 4×",
        f"(in memory {x2} ms a frame, OpenVINO bf16 {rows['x2 openvino/bf16']['ms_per_frame']}, torch bf16 "
        f"{rows['x2 torch/bf16']['ms_per_frame']}, torch fp32 {rows['x2 torch/fp32']['ms_per_frame']})",
        f"{svc['saturation']['fps']} fps = {svc['saturation']['fps'] / cli:.2f}× the CLI",
        f"{one['viewer_fps'][0]} fps at the viewer, p99 {one['latency_p99_s_max']:.3f} s",
        f"{two['viewer_fps'][0]} and {two['viewer_fps'][1]} fps at the viewers, p99 {two['latency_p99_s_max']:.2f} s",
        f"{fast} vs {x2} ms a frame ({x2 / fast:.2f}×)",
        f"x2-camera-fast {rows['x2-camera-fast openvino/int8 Y only']['ms_per_frame']} ms and x2 "
        f"{rows['x2 openvino/int8 Y only']['ms_per_frame']} ms with uint8 Y in and out",
        *_planes_figures(planes),
    ]


def _planes_figures(planes: dict) -> list[str]:
    pipe = {m: planes["pipeline"][m] for m in ("x2-camera-fast", "x2")}
    live = {(r["planes"], r["streams"]): r for r in planes["live"]}
    rgb3, yuv3 = live[(False, 3)], live[(True, 3)]
    return [
        *(f"{m} {p['rgb']['total']} → {p['planes']['total']} ms ({p['planes_over_rgb']}×)" for m, p in pipe.items()),
        f"three cameras at once reach {yuv3['viewer_fps'][0]}, {yuv3['viewer_fps'][1]} and {yuv3['viewer_fps'][2]} fps "
        f"at the viewers (p99 {yuv3['latency_p99_s_max']:.2f} s) against {rgb3['viewer_fps'][0]}, "
        f"{rgb3['viewer_fps'][1]} and {rgb3['viewer_fps'][2]} fps the RGB way",
        f"falls from {rgb3['cpu_ms_per_output_frame']['service']} to {yuv3['cpu_ms_per_output_frame']['service']} ms",
    ]


def test_readme_benchmark_figures_match_their_json() -> None:
    readme = " ".join((REPO / "README.md").read_text().split())  # prose wraps lines anywhere
    missing = [f for f in expected_figures() + amx_figures() if f not in readme]
    assert not missing, f"README.md does not say (from bench/results/*.json): {missing}"
