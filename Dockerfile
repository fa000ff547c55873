# syntax=docker/dockerfile:1
# perceptra-seg REST service and segmentor-cli on CPU.
#   docker build -t perceptra-seg .
#   docker run -p 8000:8000 -v perceptra-models:/models perceptra-seg
# Weights: put Meta's checkpoint files into the /models volume (or mount them there), or let the service download
# the configured model into /models at its first start (it needs network access then; later starts reuse the file).
# Configuration: /etc/perceptra-seg/config.yaml (this repository's config.yaml; mount your own over it) and
# SEGMENTOR_<SECTION>_<FIELD> environment variables, e.g. -e SEGMENTOR_MODEL_NAME=sam_v1.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
# The same two steps as CI: the pinned torch first (here its CPU build), then the package with its extras
# (their versions are bounded in pyproject.toml, hence no pins on the second install).
RUN python -m venv /opt/venv \
    && pip install --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY perceptra_seg ./perceptra_seg
# with redis-py for server.state: redis (docker-compose.yml, docs/scaling.md); unused unless configured
# hadolint ignore=DL3013
RUN pip install ".[torch,server,cli]" \
    && pip install ".[redis]"

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SEGMENTOR_CONFIG=/etc/perceptra-seg/config.yaml \
    SEGMENTOR_MODEL_CACHE_DIR=/models \
    SEGMENTOR_SERVER_HOST=0.0.0.0 \
    SEGMENTOR_SERVER_PORT=8000 \
    HF_HOME=/models/huggingface
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin segmentor \
    && mkdir -p /models \
    && chown segmentor:segmentor /models
COPY --from=build /opt/venv /opt/venv
COPY config.yaml /etc/perceptra-seg/config.yaml
USER 10001
WORKDIR /home/segmentor
VOLUME ["/models"]
EXPOSE 8000
# Liveness only (/v1/healthz); the first start may download weights, hence the long start period.
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('SEGMENTOR_SERVER_PORT', '8000'); sys.exit(urllib.request.urlopen(f'http://127.0.0.1:{port}/v1/healthz', timeout=4).status != 200)"]
CMD ["segmentor-cli", "serve"]
