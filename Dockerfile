# syntax=docker/dockerfile:1
# One sentrycam server for a team: REST API, websocket ingest, dashboard, DuckDB on a volume.
#   docker build -t sentrycam .
#   docker run -p 8765:8765 -v sentrycam-data:/data -e SENTRYCAM_TOKEN=... sentrycam
# Tokens come from the environment or a token file, never from the command line; see the
# README's "Team server (Docker)". Without a Docker daemon, scripts/container.sh builds it
# with buildah.
ARG BASE=python:3.11-slim
FROM ${BASE}

# The server needs no GPU: torch's CPU build, a fraction of the size of the default CUDA build.
# TORCH_INDEX is a package index URL, or a folder of wheels mounted into the build (torch's own
# dependencies then come from the default index: pin TORCH_SPEC to the folder's wheel). Left
# empty, both come from constraints.txt: its CPU index and torch==VERSION.
ARG TORCH_INDEX=
ARG TORCH_SPEC=

# Both bases have python3 (the slim image's own, or Debian's with python3-venv); a venv on PATH
# keeps the install apart from the system's Python.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

WORKDIR /src
COPY pyproject.toml README.md __init__.py __main__.py constraints.txt ./
COPY protocol/ protocol/
COPY capture/ capture/
COPY projector/ projector/
COPY backend/ backend/
COPY frontend/ frontend/

# A build secret "ca" (a CA bundle, for builders behind a TLS-inspecting proxy) is used by pip
# only: a secret mount never lands in a layer. The sources are removed once installed.
# Versions come from pyproject.toml's ranges and TORCH_SPEC (e.g. torch==2.13.0), not pip pins:
# hadolint ignore=DL3013
RUN --mount=type=secret,id=ca \
    if [ -f /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
    && TORCH_INDEX="${TORCH_INDEX:-$(sed -n 's/^# torch-cpu-index: //p' constraints.txt)}" \
    && TORCH_SPEC="${TORCH_SPEC:-$(grep '^torch==' constraints.txt)}" \
    && python3 -m venv "$VIRTUAL_ENV" \
    && if [ -d "$TORCH_INDEX" ]; then \
         pip install --find-links "$TORCH_INDEX" "$TORCH_SPEC"; \
       else \
         pip install --index-url "$TORCH_INDEX" "$TORCH_SPEC"; \
       fi \
    && pip install -c constraints.txt /src \
    && rm -rf /src \
    && useradd --create-home --uid 1000 sentrycam \
    && mkdir -p /data \
    && chown sentrycam:sentrycam /data

USER 1000
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8765
# /health needs no token.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8765/health', timeout=4)"]
# Binding 0.0.0.0 requires a write token (SENTRYCAM_TOKEN or SENTRYCAM_TOKEN_FILE): the server
# refuses to start without one.
CMD ["sentrycam", "serve", "--db", "/data/sentrycam.duckdb", "--host", "0.0.0.0", "--port", "8765"]
