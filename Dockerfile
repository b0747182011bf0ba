# vsr service image. Two variants from one file:
#   docker build -t vsr:cuda .                          # NVIDIA GPU (default)
#   docker build -t vsr:cpu --build-arg VARIANT=cpu .   # any x86-64 host, no NVIDIA stack
#
# Versions (change them together, here only):
#   base      python:3.11-slim-bookworm (Debian 12, CPython 3.11)
#   torch     2.13.0 — the same version the project's dev/CI venv pins (Makefile TORCH_PIN)
#     cuda:   the PyPI wheel, a CUDA 13.0 build that carries its own CUDA runtime, cuBLAS and cuDNN 9 as pip
#             packages: the host needs only the NVIDIA driver (>= 580) and the NVIDIA Container Toolkit.
#             Older driver? Build against a CUDA 12 index of the same release, e.g.
#             --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126
#     cpu:    2.13.0+cpu from the PyTorch CPU index (~200 MB instead of ~4 GB).
# The bundled models (vsr/models/*) are package data; the build fails without x2, x4, x2-camera, x2-camera-fast and x2-camera-lite
# (all four load by default: x2 for stills, x2-camera for video jobs, streams choose between the camera models).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------- build: a self-contained venv in /opt/venv
FROM ${PYTHON_IMAGE} AS build
ARG VARIANT=cuda
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN python -m venv /opt/venv
# torch first, from the index of the chosen variant, so the project install below reuses it.
RUN index="${TORCH_INDEX_URL}"; \
    if [ -z "$index" ]; then \
      case "${VARIANT}" in \
        cuda) index=https://pypi.org/simple ;; \
        cpu) index=https://download.pytorch.org/whl/cpu ;; \
        *) echo "VARIANT must be cuda or cpu, got '${VARIANT}'" >&2; exit 1 ;; \
      esac; \
    fi; \
    pip install --no-cache-dir --index-url "$index" "torch==${TORCH_VERSION}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY vsr ./vsr
COPY vsr_cli ./vsr_cli
COPY training ./training
COPY service ./service
COPY bench ./bench
# A regular (non-editable) install: code and models are copied into the venv; /src is not needed at run time.
RUN pip install --no-cache-dir . "torch==${TORCH_VERSION}" \
    && python -c "import importlib.resources as r, sys; \
m = r.files('vsr') / 'models'; \
missing = [n for n in ('x2', 'x4', 'x2-camera', 'x2-camera-fast', 'x2-camera-lite') if not (m / n / 'model.safetensors').is_file()]; \
sys.exit(f'bundled models missing: {missing}' if missing else 0)"

# ---------------------------------------------------------------- runtime: the venv, a non-root user, nothing else
FROM ${PYTHON_IMAGE} AS runtime
ARG VARIANT=cuda
LABEL org.opencontainers.image.title="vsr" \
      org.opencontainers.image.description="Real-time video super-resolution service (${VARIANT})" \
      org.opencontainers.image.licenses="Apache-2.0"
# The jobs folder (VSR_VIDEO_JOBS_DIR): owned by the service user, so a named volume mounted there starts writable.
RUN useradd --system --uid 10001 --user-group --home-dir /tmp --no-create-home --shell /usr/sbin/nologin vsr \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/vsr/jobs
COPY --from=build /opt/venv /opt/venv
# Configuration is by VSR_* variables (see docs/deploy.md). Caches go to /tmp so the root FS can be read-only.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    TORCHINDUCTOR_CACHE_DIR=/tmp/.cache/torchinductor \
    TRITON_CACHE_DIR=/tmp/.cache/triton \
    VSR_HOST=0.0.0.0 \
    VSR_PORT=8000
USER 10001:10001
WORKDIR /tmp
EXPOSE 8000
# Ready = models loaded and warmed up. No curl in the image: the interpreter does the request.
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('VSR_PORT', '8000') + '/v2/health/ready', timeout=4)"]
ENTRYPOINT ["vsr"]
CMD ["serve"]
