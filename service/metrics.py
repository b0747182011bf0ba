"""Every Prometheus metric of the service, in one place, on an injected registry (tests pass a fresh one).

Names carry base units (seconds, bytes) and counters end in ``_total``. Labels are bounded: the route *template*,
the configured model names, a fixed set of rejection reasons, and sources that their owners cap.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    gc_collector,
    platform_collector,
    process_collector,
)

# Buckets chosen for this workload: a small frame takes a few ms on a GPU, a 4K frame on a laptop CPU ~seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
QUEUE_WAIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_SIZE_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)
# A recorded video takes seconds (a short clip on a GPU) to an hour (a long one on a CPU).
VIDEO_JOB_BUCKETS = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
VIDEO_JOB_STATES = ("queued", "running", "done", "failed", "cancelled")

# The reasons work is turned away (label values of vsr_rejected_total).
REJECT_REASONS = ("queue_full", "deadline", "too_large", "shutting_down")


def new_registry() -> CollectorRegistry:
    """A registry with the process/platform/GC collectors the default one would have."""
    reg = CollectorRegistry()
    process_collector.ProcessCollector(registry=reg)
    platform_collector.PlatformCollector(registry=reg)
    gc_collector.GCCollector(registry=reg)
    return reg


class Metrics:
    """The service's metrics. Create one per registry (a metric name registers once per registry)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        r = registry

        # HTTP (the middleware in service/app.py)
        self.http_requests = Counter(
            "vsr_http_requests_total", "HTTP requests by route template", ["route", "method", "status"], registry=r
        )
        self.http_duration = Histogram(
            "vsr_http_request_duration_seconds", "HTTP request latency", ["route"], buckets=LATENCY_BUCKETS, registry=r
        )

        # Batcher / worker (service/batcher.py)
        self.queue_depth = Gauge("vsr_queue_depth", "frames waiting for the inference worker", registry=r)
        self.queue_wait = Histogram(
            "vsr_queue_wait_seconds", "time a frame waits before its batch runs", buckets=QUEUE_WAIT_BUCKETS, registry=r
        )
        self.batch_size = Histogram("vsr_batch_size", "frames per batch", buckets=BATCH_SIZE_BUCKETS, registry=r)
        self.batch_compute = Histogram(
            "vsr_batch_compute_seconds", "model time per batch", buckets=LATENCY_BUCKETS, registry=r
        )
        self.frames = Counter("vsr_frames_total", "frames upscaled, by source", ["source"], registry=r)
        self.rejected = Counter("vsr_rejected_total", "work turned away, by reason", ["reason"], registry=r)
        for reason in REJECT_REASONS:
            self.rejected.labels(reason=reason)
        self.batch_errors = Counter("vsr_batch_errors_total", "batches that raised", ["model"], registry=r)
        # The worker's share (service/workload.py): rate(vsr_worker_seconds_total{source=s}) / rate(busy) is s's share
        self.worker_busy = Counter(
            "vsr_worker_busy_seconds_total", "time the inference worker spent running batches", registry=r
        )
        self.worker_seconds = Counter(
            "vsr_worker_seconds_total",
            "inference worker time by source (a batch's time split among its frames by pixels)",
            ["source"],
            registry=r,
        )
        self.overloaded = Gauge(
            "vsr_overloaded",
            "1 while demand exceeds the worker (busy >= 90 % of the last 10 s and most batches left work waiting): "
            "streams drop frames to stay live, uploads may get 503",
            registry=r,
        )

        # Engine (service/engine.py)
        self.model_info = Gauge(
            "vsr_model_info",
            "loaded models (value 1)",
            ["model", "arch", "scale", "parameters", "dtype", "runtime", "device"],
            registry=r,
        )
        self.oom_retries = Counter(
            "vsr_oom_retries_total", "CUDA out-of-memory errors recovered by splitting or tiling", registry=r
        )
        self.ready = Gauge("vsr_ready", "1 once the models are loaded and warm", registry=r)
        self.queue_limit = Gauge("vsr_queue_limit", "frames the inference queue holds before 503 (setting)", registry=r)

        # Recorded-video jobs (service/videojobs.py)
        self.video_jobs = Gauge("vsr_video_jobs", "video jobs kept, by state", ["state"], registry=r)
        self.video_jobs_finished = Counter(
            "vsr_video_jobs_finished_total", "video jobs that ended, by outcome", ["outcome"], registry=r
        )
        self.video_job_duration = Histogram(
            "vsr_video_job_duration_seconds", "run time of a video job", buckets=VIDEO_JOB_BUCKETS, registry=r
        )
        for state in VIDEO_JOB_STATES:
            self.video_jobs.labels(state=state)
            if state in ("done", "failed", "cancelled"):
                self.video_jobs_finished.labels(outcome=state)

        # --- stream metrics (service/streams/) go below this line ---
        # The `stream` label is the operator's stream name, bounded by VSR_MAX_STREAMS (removed when a stream is).
        self.stream_frames = Counter(
            "vsr_stream_frames_total",
            "stream frames decoded (in) and emitted (out)",
            ["stream", "direction"],
            registry=r,
        )
        self.stream_dropped = Counter(
            "vsr_stream_dropped_frames_total", "stream frames dropped, by reason", ["stream", "reason"], registry=r
        )
        self.stream_reconnects = Counter(
            "vsr_stream_reconnects_total", "stream reconnect attempts", ["stream"], registry=r
        )
        self.stream_state = Gauge(
            "vsr_stream_state",
            "1 for the stream's current state (connecting|live|backoff|failed|stopped)",
            ["stream", "state"],
            registry=r,
        )
        self.stream_latency = Histogram(
            "vsr_stream_latency_seconds",
            "decode -> upscaled frame emitted",
            ["stream"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stream_model = Gauge(
            "vsr_stream_model",
            "1 for the model a stream runs now (auto streams switch)",
            ["stream", "model"],
            registry=r,
        )
        self.stream_budget = Gauge(
            "vsr_stream_budget_ratio",
            "worker time the live streams need with the auto model choice, as a share of the budget (>1: none fits)",
            registry=r,
        )

    def enable_gpu_memory(self, allocated: Callable[[], float], reserved: Callable[[], float]) -> None:
        """GPU memory gauges, read at scrape time. Only called on CUDA."""
        Gauge("vsr_gpu_memory_allocated_bytes", "CUDA memory held by tensors", registry=self.registry).set_function(
            allocated
        )
        Gauge(
            "vsr_gpu_memory_reserved_bytes", "CUDA memory reserved by the caching allocator", registry=self.registry
        ).set_function(reserved)
