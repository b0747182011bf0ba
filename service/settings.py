"""Service settings: parsed once at the entry point (env ``VSR_*``, then CLI flags) and passed down.

Lists (``VSR_MODELS``, ``VSR_API_KEYS``) are comma-separated, e.g. ``VSR_MODELS=x2,x4``. Which loaded model a
request gets when it names none depends on its use (stills, streams, video jobs): see :meth:`Settings.model_for`.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal

import torch
import yaml
from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.sharding import Shard, resolve_shard
from service.streams.auto import BUDGET as AUTO_BUDGET
from service.streams.config import EncoderOptions, StreamOptions, StreamSpec, load_stream_specs
from service.urlpolicy import parse_cidrs
from service.videojobs import JobOptions
from vsr.engine import pick_device, pick_dtype
from vsr.frames import FrameCaps
from vsr.images import DecodeLimits
from vsr.memory import default_budget_bytes
from vsr.runner import RuntimeOptions
from vsr.tiling import TileSpec

_STREAM = StreamOptions()  # the stream defaults are written once, there; the VSR_STREAM_* fields take them


def _split_commas(v: object) -> object:
    if isinstance(v, str):
        return [s.strip() for s in v.split(",") if s.strip()]
    return v


# Loaded by default; each use falls back to the first loaded model when its preferred one is not loaded.
DEFAULT_MODELS = ("x2", "x4", "x2-camera", "x2-camera-fast", "x2-camera-lite")
PREFERRED_MODEL = {"image": "x2", "stream": "x2-camera", "video": "x2-camera"}
ModelUse = Literal["image", "stream", "video"]


class Settings(BaseSettings):
    """Every knob of ``vsr serve``. Env: ``VSR_<FIELD>`` (case-insensitive)."""

    # allow_inf_nan=False: no float knob means anything at inf or nan (a timeout of inf overflowed thread.join)
    model_config = SettingsConfigDict(env_prefix="VSR_", extra="ignore", validate_default=True, allow_inf_nan=False)

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    models: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_MODELS),
        description="artifact names (x2, x4, x2-camera, x2-camera-fast, x2-camera-lite) or paths",
    )
    model_repository: str | None = Field(
        default=None,
        description="a folder of artifact folders (folder name = model name) that POST /v2/repository/models/{name}/"
        "load and /unload serve; names in models load at start",
    )
    image_model: str | None = Field(
        default=None, description="default model of /upscale (stills): x2 when loaded, else the first of models"
    )
    stream_model: str | None = Field(
        default=None,
        description="default model of live streams: unset or auto = the best loaded camera model whose measured cost "
        "fits all live streams (service/streams/auto.py); a model name pins it",
    )
    stream_budget: float = Field(
        default=AUTO_BUDGET,
        gt=0,
        le=2,
        description="share of the worker's second that the auto streams' measured model time may fill: above 1 trades "
        "a few dropped frames for a better model (1.1: ~90 % of frames at worst), 1.0 or less aims at every frame",
    )
    stream_planes: bool = Field(
        default=True,
        description="luma models get a stream frame's Y straight from the decoder's yuv420p planes and their JPEG is "
        "encoded from the planes (no RGB round trip: ~1/3 less time a frame); false: RGB for every model",
    )
    video_model: str | None = Field(
        default=None, description="default model of video jobs: x2-camera (codec/noise-trained) when loaded"
    )
    device: str = Field(default="auto", description="auto (cuda if available, else cpu), cpu, cuda, cuda:N")
    dtype: Literal["auto", "fp32", "fp16", "bf16", "int8"] = Field(
        default="auto",
        description="auto: fp16 on CUDA; on CPU the fastest of fp32/bf16/int8 (int8: the artifact's own OpenVINO "
        "IR, when it has one), measured per model at start-up with the runtime",
    )
    runtime: Literal["auto", "torch", "openvino"] = Field(
        default="auto",
        description="CPU runtime: auto measures torch against OpenVINO at start-up (with dtype auto; a named dtype "
        "keeps torch unless this says openvino); torch without openvino installed",
    )
    ov_cache_dir: str | None = Field(
        default=None, description="OpenVINO's compiled-model cache; default $XDG_CACHE_HOME/vsr/ov (~/.cache/vsr/ov)"
    )
    max_batch_size: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="unset (auto): 8 on CUDA, 2 on CPU, where OpenVINO runs a batch's two frames side by side on "
        "half the threads each (measured on 2 cores, vsr bench streams/service: two 30 fps cameras 21-25 fps each at "
        "batch 2, 15 at batch 1; 16 JPEG clients 15.6 vs 16.1 fps, within run-to-run noise; batch 8 gains nothing)",
    )
    max_batch_delay_ms: float = Field(default=5.0, ge=0, le=10_000)
    queue_limit: int = Field(default=64, ge=1, description="frames waiting for the worker; more get 503 + Retry-After")
    request_timeout_s: float = Field(
        default=30.0, gt=0, description="deadline of a request; work past it is failed (504)"
    )
    max_upload_bytes: int = Field(default=25 * 1024 * 1024, ge=1024, description="image upload cap (bytes)")
    max_json_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="body cap of every other route (JSON), 413 before it is read"
    )
    max_input_pixels: int = Field(
        default=3840 * 2160,
        ge=64,
        description="width*height cap: images (header), every decoded frame of videos and streams",
    )
    http_header_timeout_s: float = Field(
        default=10.0, gt=0, description="a connection must send its request headers within this (slow clients)"
    )
    http_body_timeout_s: float = Field(
        default=30.0, gt=0, description="a request body that makes no progress this long closes the connection"
    )
    memory_budget_mb: int = Field(
        default=0,
        ge=0,
        description="bytes the batcher lets a batch use (inputs + activations + outputs), MiB; 0 = from this "
        "machine: min(1536, 40% of the container's or host's memory). Size a container limit at ~1.5x this + 1 GiB",
    )
    tile_size: int = Field(
        default=0,
        ge=0,
        description="0 (auto): frames up to ~1 MP (CPU) / 1080p (CUDA) run whole, larger ones in the fewest tiles that "
        "fit; N > 0: at most N*N input pixels per call",
    )
    compile: bool = Field(
        default=False, description="try torch.compile at warm-up (~26 s once on 2 cores); kept only if measured faster"
    )
    tile_overlap: int = Field(default=16, ge=0)
    warmup: bool = Field(default=True, description="run each model once before reporting ready")
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, repr=False, description="if set, requests need X-API-Key or Authorization: Bearer"
    )
    api_keys_file: str | None = Field(
        default=None,
        repr=False,
        description="a file with one API key per line (e.g. a mounted secret), added to api_keys",
    )
    metrics_public: bool = Field(default=True, description="false: /metrics needs an API key too (when keys are set)")
    docs_public: bool = Field(default=True, description="false: no /docs, /redoc, /openapi.json")

    # Live streams (service/streams/) and recorded video (POST /upscale/video)
    streams: list[StreamSpec] = Field(
        default_factory=list,
        description='cameras started with the service, JSON: [{"url": "rtsp://...", "name": "gate-1"}]',
    )
    streams_file: str | None = Field(
        default=None, description="YAML list of cameras (or {streams: [...]}) started with the service"
    )
    stream_allow_cidrs: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="networks streams may connect to besides public addresses, e.g. 192.168.0.0/16 (loopback, "
        "private, link-local and metadata addresses are denied unless listed)",
    )
    stream_allow_file: bool = Field(default=False, description="allow file:// stream sources (development only)")
    max_streams: int = Field(default=8, ge=0, le=1000, description="concurrent streams")
    stream_open_timeout_s: float = Field(default=_STREAM.open_timeout_s, gt=0)
    stream_read_timeout_s: float = Field(
        default=_STREAM.read_timeout_s, gt=0, description="a source silent this long is reconnected"
    )
    stream_backoff_base_s: float = Field(default=_STREAM.backoff_base_s, gt=0)
    stream_backoff_max_s: float = Field(default=_STREAM.backoff_max_s, gt=0)
    stream_max_attempts: int = Field(
        default=_STREAM.max_attempts, ge=0, description="failed connects in a row before 'failed' (0 = forever)"
    )
    stream_max_pending: int = Field(
        default=_STREAM.max_pending, ge=1, le=64, description="frames of one stream in the batcher at once"
    )
    stream_max_frame_age_s: float = Field(
        default=_STREAM.max_frame_age_s, gt=0, description="older frames are dropped as stale"
    )
    stream_jpeg_quality: int = Field(default=_STREAM.jpeg_quality, ge=1, le=100)
    # Published streams (POST /stream {"publish": "rtsp://..."}): defaults, each overridable per stream
    stream_publish_encoder: Literal["auto", "libx264", "h264_nvenc"] = Field(
        default="auto", description="H.264 encoder of published streams; auto: h264_nvenc on CUDA, else libx264"
    )
    stream_publish_preset: str = Field(
        default=_STREAM.publish.preset, description="encoder preset (libx264: ultrafast..slow)"
    )
    stream_publish_crf: int = Field(
        default=_STREAM.publish.crf, ge=0, le=51, description="quality (CRF/CQ) when no bitrate is set"
    )
    stream_publish_bitrate_kbps: int = Field(
        default=_STREAM.publish.bitrate_kbps, ge=0, description="target bitrate; 0 = CRF"
    )
    stream_publish_gop: int = Field(default=_STREAM.publish.gop, ge=1, le=600, description="frames between keyframes")
    clips_dir: str | None = Field(
        default=None, description="folder POST /stream/{id}/record writes clips to (for `vsr adapt`); unset: off"
    )
    clips_max_mb: int = Field(default=2048, ge=1, description="disk cap of clips_dir (MiB); a recording stops at it")
    video_max_bytes: int = Field(default=512 * 1024 * 1024, ge=1024, description="upload cap of POST /upscale/video")
    video_max_seconds: float = Field(
        default=600.0, gt=0, description="duration cap of an uploaded video, counted from its frames' timestamps"
    )
    video_max_frames: int = Field(default=36_000, ge=1, description="frame-count cap of an uploaded video (counted)")
    video_max_fps: float = Field(
        default=240.0, gt=0, description="frame-rate cap (counted: frames per second of media time, 1 s of burst)"
    )
    video_max_jobs: int = Field(default=8, ge=1, description="video jobs kept at once (queued, running, finished)")
    video_workers: int = Field(default=1, ge=1, le=16)
    video_jobs_dir: str | None = Field(
        default=None,
        description="folder for video uploads, results and job state (SQLite); a volume keeps jobs across "
        "restarts. Default: a private temporary folder, removed at shutdown",
    )
    video_job_ttl_s: float = Field(default=3600.0, gt=0, description="a finished job's result is kept this long")
    video_segment_s: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="a video job's output is written in durable segments of this many seconds; after a crash the "
        "job resumes after its last finished segment (with VSR_VIDEO_JOBS_DIR)",
    )

    # Camera sharding across replicas (service/sharding.py, docs/scale.md)
    shard_count: int = Field(default=1, ge=1, le=1000, description="replicas sharing the configured cameras")
    shard_index: int | None = Field(
        default=None, ge=0, description="this replica's shard (0..count-1); unset: the host name's -<ordinal>"
    )

    _split = field_validator("models", "stream_allow_cidrs", mode="before")(_split_commas)

    @field_validator("api_keys", mode="before")
    @classmethod
    def _some_keys(cls, v: object) -> object:
        """``VSR_API_KEYS=' , '`` would run with auth off: refused (unset or empty means no keys)."""
        keys = _split_commas(v)
        if isinstance(v, str) and v and not keys:
            raise ValueError("has no key, only commas or spaces (unset it to run without API keys)")
        return keys

    @field_validator("stream_allow_cidrs")
    @classmethod
    def _cidrs(cls, v: list[str]) -> list[str]:
        parse_cidrs(v)  # raises ValueError on a bad network
        return v

    @field_validator("models")
    @classmethod
    def _some_models(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one model is needed, e.g. VSR_MODELS=x2")
        return v

    @field_validator("device")
    @classmethod
    def _known_device(cls, v: str) -> str:
        v = v.strip().lower()
        if v == "auto":
            return v
        try:
            dev = torch.device(v)
        except RuntimeError:
            raise ValueError(f"unknown device {v!r}; use auto, cpu, cuda or cuda:N") from None
        # Availability is checked where the engine loads (vsr.engine.pick_device -> one error line, exit 2), not
        # here: a compose/Kubernetes file that asks for cuda must validate on a CPU-only host too.
        del dev  # parsed only to refuse nonsense like "cuda:x"
        return v

    @model_validator(mode="after")
    def _keys_from_file(self) -> Settings:
        if self.api_keys_file:
            try:
                lines = Path(self.api_keys_file).read_text().splitlines()
            except OSError as e:  # the message names the file, never its contents
                raise ValueError(f"cannot read the API key file: {e.strerror}") from None
            keys = [k.strip() for k in lines if k.strip() and not k.lstrip().startswith("#")]
            if not keys:  # a mount that came up empty must not start the service with auth off
                raise ValueError(f"the API key file {self.api_keys_file!r} holds no key (one per line)")
            self.api_keys = [*self.api_keys, *(k for k in keys if k not in self.api_keys)]
        return self

    @model_validator(mode="after")
    def _shard_known(self) -> Settings:
        self.shard()  # fail at start-up, with the operator's message, when count > 1 and no index can be found
        return self

    @model_validator(mode="after")
    def _streams_file_readable(self) -> Settings:
        """A missing or malformed cameras file is a settings error (exit 2 at start), not a crash in the lifespan."""
        if self.streams_file:
            try:
                load_stream_specs(None, self.streams_file)
            except OSError as e:
                raise ValueError(f"VSR_STREAMS_FILE: cannot read {self.streams_file!r}: {e.strerror}") from None
            except ValidationError as e:
                err = e.errors(include_input=False, include_url=False)[0]
                first = f"entry {'.'.join(str(x) for x in err['loc'])}: {err['msg']}" if err["loc"] else err["msg"]
                raise ValueError(f"VSR_STREAMS_FILE: {self.streams_file!r} is not a list of streams: {first}") from None
            except (yaml.YAMLError, AttributeError, TypeError) as e:
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise ValueError(f"VSR_STREAMS_FILE: {self.streams_file!r} is not a list of streams: {first}") from None
        return self

    @model_validator(mode="after")
    def _tiles_fit(self) -> Settings:
        if self.tile_size and self.tile_overlap * 2 >= self.tile_size:
            raise ValueError(f"tile_overlap ({self.tile_overlap}) must be < half of tile_size ({self.tile_size})")
        return self

    # Derived values, resolved against this machine.

    def torch_device(self) -> torch.device:
        return pick_device(self.device)

    def torch_dtype(self) -> torch.dtype:
        return pick_dtype("fp32" if self.dtype == "int8" else self.dtype, self.torch_device())

    def runtime_options(self) -> RuntimeOptions:
        return RuntimeOptions(self.runtime, cache_dir=Path(self.ov_cache_dir) if self.ov_cache_dir else None)

    def model_for(self, use: ModelUse, loaded: Sequence[str]) -> str:
        """The model a request of ``use`` gets when it names none: ``VSR_<USE>_MODEL`` (must be loaded), else the
        preferred one when loaded (x2 for stills, x2-camera for streams and video), else the first loaded."""
        chosen = {"image": self.image_model, "stream": self.stream_model, "video": self.video_model}[use]
        if chosen is not None and not (use == "stream" and chosen == "auto"):  # auto: decided per budget, later
            if chosen not in loaded:
                raise ValueError(f"VSR_{use.upper()}_MODEL={chosen!r} is not loaded; loaded: {', '.join(loaded)}")
            return chosen
        return PREFERRED_MODEL[use] if PREFERRED_MODEL[use] in loaded else loaded[0]

    def shard(self) -> Shard:
        return resolve_shard(self.shard_count, self.shard_index, socket.gethostname())

    def stream_options(self) -> StreamOptions:
        """The knobs every stream shares, from the ``VSR_STREAM_*`` settings."""
        return StreamOptions(
            open_timeout_s=self.stream_open_timeout_s,
            read_timeout_s=self.stream_read_timeout_s,
            backoff_base_s=self.stream_backoff_base_s,
            backoff_max_s=self.stream_backoff_max_s,
            max_attempts=self.stream_max_attempts,
            max_pending=self.stream_max_pending,
            max_frame_age_s=self.stream_max_frame_age_s,
            jpeg_quality=self.stream_jpeg_quality,
            max_pixels=self.max_input_pixels,
            publish=EncoderOptions(
                encoder=self.stream_publish_encoder,
                preset=self.stream_publish_preset,
                crf=self.stream_publish_crf,
                bitrate_kbps=self.stream_publish_bitrate_kbps,
                gop=self.stream_publish_gop,
            ),
        )

    def job_options(self) -> JobOptions:
        """The video jobs' knobs, from the ``VSR_VIDEO_*`` settings."""
        return JobOptions(
            max_jobs=self.video_max_jobs,
            workers=self.video_workers,
            ttl_s=self.video_job_ttl_s,
            caps=self.video_caps(),
            jobs_dir=self.video_jobs_dir,
            segment_s=self.video_segment_s,
        )

    def image_limits(self) -> DecodeLimits:
        """What every uploaded image is checked against before its pixels are decoded."""
        return DecodeLimits(max_pixels=self.max_input_pixels)

    def video_caps(self) -> FrameCaps:
        """What every decoded frame of a video job is checked against."""
        return FrameCaps(
            max_pixels=self.max_input_pixels,
            max_frames=self.video_max_frames,
            max_seconds=self.video_max_seconds,
            max_fps=self.video_max_fps,
        )

    def batch_size(self, device: torch.device) -> int:
        """``max_batch_size``, or its automatic value for ``device`` when unset."""
        return self.max_batch_size or (8 if device.type == "cuda" else 2)

    def memory_budget_bytes(self) -> int:
        return self.memory_budget_mb * 1024 * 1024 if self.memory_budget_mb else default_budget_bytes()

    def tiles(self) -> TileSpec:
        return TileSpec(self.tile_size, self.tile_overlap)

    @property
    def max_batch_delay_s(self) -> float:
        return self.max_batch_delay_ms / 1000.0
