"""Issue 11's targets, judged from the results files (``bench/README.md``'s Targets table and the notes under it).

- CLI file to file, 640x360 JPEG -> 1280x720 JPEG, x2: >= 4x OpenCV ESPCN's file-to-file fps (goal 7x) — realtime;
- ``vsr serve`` at 16 JPEG clients: >= 0.85x the CLI's fps and >= 3x ESPCN's (goal >= 0.9x the bare engine) — service
  (ESPCN measured in the same run; the CLI's fps comes from the realtime run, so that ratio spans two runs);
- one 640x360 ~30 fps RTSP camera through ``/stream`` to an MJPEG viewer: >= 27 fps out, p99 latency — streams;
  two such cameras at once: >= 20 fps each at the viewers (issue 18) — streams;
- GPU: >= 16 concurrent 540p -> 1080p 30 fps streams with p99 < 50 ms — gpu-cuda (only where a GPU was lent).
"""

from __future__ import annotations

from typing import Any

CLI_VS_ESPCN = 4.0
CLI_VS_ESPCN_GOAL = 7.0
SERVICE_VS_CLI = 0.85
SERVICE_VS_ESPCN = 3.0
SERVICE_VS_BARE_GOAL = 0.9
STREAM_FPS = 27.0
TWO_STREAMS_FPS = 20.0
GPU_STREAMS = 16


def _status(ok: bool | None) -> str:
    return "not measured" if ok is None else ("met" if ok else "**missed**")


def _load(res: dict[str, Any]) -> str:
    la = res.get("loadavg", {})
    return f"load average {la.get('start', '?')} -> {la.get('end', '?')}"


def targets(results: dict[str, dict[str, Any]]) -> tuple[list[str], list[str]]:
    """(table rows, notes) for the targets, from ``{stem: result}`` (e.g. ``realtime-cpu``)."""
    rows: list[str] = []
    notes: list[str] = []
    found = {
        kind: next(((n, r) for n, r in results.items() if n.startswith(kind + "-") and not r.get("dry_run")), None)
        for kind in ("realtime", "service", "streams", "gpu")
    }
    rt, svc, st, gpu = (v[1] if v else None for v in found.values())
    src = {k: f" ({v[0]})" if v else "" for k, v in found.items()}

    cli_fps = None
    if rt is not None and "file_to_file" in rt:
        f2f = rt["file_to_file"]
        cli = f2f["vsr_upscale"]
        cli_fps = cli["fps_steady"]
        espcn = f2f.get("opencv_espcn", {}).get("fps")
        ratio = round(cli_fps / espcn, 2) if espcn else None
        ok = None if ratio is None else ratio >= CLI_VS_ESPCN
        rows.append(
            f"| CLI file to file ≥ {CLI_VS_ESPCN:g}× ESPCN (goal {CLI_VS_ESPCN_GOAL:g}×){src['realtime']} | {cli_fps} vs {espcn} fps = "
            f"{ratio}× (incl. start-up: {cli['fps_total']} fps) | {_status(ok)} |"
        )
        mem = rt["in_memory"]
        notes.append(
            f"- realtime ({_load(rt)}): `vsr upscale` of {cli['frames']} 640x360 JPEGs -> {cli['output_size']} JPEGs: "
            f"{cli_fps} fps steady (extra frames / extra time over a 1-frame run), {cli['fps_total']} fps including "
            f"start-up ({cli['wall_1_frame_s']} s for one frame: Python, torch import, model load, dtype probe, "
            f"warm-up); OpenCV ESPCN file to file {espcn} fps. In memory on the same frames: "
            + ", ".join(f"{k} {v['fps']} fps" for k, v in mem.items())
            + f". Runner: {rt.get('runner')}. The kernel's convs: {rt.get('conv_gflop_per_frame')} GFLOP per frame at "
            f"{rt.get('kernel_fraction_of_matmul_peak')} of this CPU's measured {rt.get('matmul_dtype', 'float32')} "
            f"matmul rate ({rt.get('matmul_peak_gflops')} GFLOP/s)."
        )
    else:
        rows.append(f"| CLI file to file ≥ {CLI_VS_ESPCN:g}× ESPCN | — | not measured |")

    if svc is not None:
        sat = svc["saturation"]
        vs_cli = round(sat["fps"] / cli_fps, 2) if cli_fps else None
        vs_espcn = sat.get("ratio_to_espcn")
        ok = None if vs_cli is None or vs_espcn is None else vs_cli >= SERVICE_VS_CLI and vs_espcn >= SERVICE_VS_ESPCN
        rows.append(
            f"| service at {sat['clients']} JPEG clients ≥ {SERVICE_VS_CLI:g}× CLI and ≥ {SERVICE_VS_ESPCN:g}× ESPCN "
            f"(goal ≥ {SERVICE_VS_BARE_GOAL:g}× bare engine){src['service']} | {sat['fps']} fps = {vs_cli}× CLI, {vs_espcn}× ESPCN, "
            f"{sat['ratio_to_bare']:.0%} of bare | {_status(ok)} |"
        )
        levels = svc["sizes"][0]["levels"]
        notes.append(
            f"- service ({_load(svc)}): "
            + "; ".join(
                f"{lv['clients']} clients {lv['variant']}: {lv['fps']} fps, p99 {lv['latency_ms']['p99']} ms, "
                f"batch {lv['avg_batch']}, {lv['ratio_to_bare']:.0%} of bare"
                for lv in levels
            )
            + f". ESPCN in the same run {sat.get('opencv_espcn_fps')} fps (in memory). "
            "The CLI ratio divides by the realtime run's steady CLI fps (another run, minutes apart)."
        )
    else:
        rows.append("| service at 16 JPEG clients | — | not measured |")

    if st is not None and st.get("rows"):
        one = st["rows"][0]
        viewer = min(one.get("viewer_fps") or [0.0])
        ok = viewer >= STREAM_FPS
        rows.append(
            f"| one 640x360 30 fps RTSP camera -> MJPEG viewer ≥ {STREAM_FPS:g} fps{src['streams']} | {viewer} fps at the viewer "
            f"({one['output_fps_total']} emitted), p99 latency {one['latency_p99_s_max']} s | {_status(ok)} |"
        )
        if len(st["rows"]) > 1:
            two = st["rows"][1]
            each = min(two.get("viewer_fps") or [0.0])
            models = ", ".join(sorted({s.get("model") or "?" for s in two["per_stream"]}))
            rows.append(
                f"| two such cameras at once ≥ {TWO_STREAMS_FPS:g} fps each{src['streams']} | {two.get('viewer_fps')} "
                f"fps at the viewers ({models}), p99 latency {two['latency_p99_s_max']} s | {_status(each >= TWO_STREAMS_FPS)} |"
            )
        notes.append(
            f"- streams ({_load(st)}): input {one['input_fps_min']} fps, emitted {one['output_fps_total']} fps, viewer "
            f"received {one.get('viewer_fps')} fps, p50/p99 latency {one['latency_p50_s_max']}/"
            f"{one['latency_p99_s_max']} s (decode -> emitted), model {one['model_ms_per_frame']} ms/frame in the "
            f"service, worker busy {one['worker_busy']:.0%}; dropped: "
            + (", ".join(f"{k} {v}" for s in one["per_stream"] for k, v in s["dropped"].items()) or "none")
            + f". Max sustained streams: {st.get('max_sustained_streams')}."
        )
    else:
        rows.append(f"| one RTSP camera ≥ {STREAM_FPS:g} fps | — | not measured |")

    if gpu is not None:
        n = gpu["streams_30fps_sustained"]
        rows.append(
            f"| GPU ≥ {GPU_STREAMS} × 540p->1080p 30 fps streams, p99 < 50 ms ({gpu['card']}){src['gpu']} | {n} "
            f"| {_status(n >= GPU_STREAMS)} |"
        )
    else:
        rows.append(
            f"| GPU ≥ {GPU_STREAMS} × 540p->1080p 30 fps streams, p99 < 50 ms | no GPU this session: "
            "`scripts/gpu_check.sh` passes its CPU dry run | not measured |"
        )
    return rows, notes
