# One sentrycam server for a team: REST API, websocket ingest, dashboard, DuckDB on a volume.
#   docker build -t sentrycam .
#   docker run -p 8765:8765 -v sentrycam-data:/data -e SENTRYCAM_TOKEN=change-me sentrycam
# Trainers then stream with capture.attach(model, url="http://HOST:8765", token="change-me").
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 1000 sentrycam \
    && mkdir -p /data /app \
    && chown sentrycam:sentrycam /data

WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY __init__.py __main__.py ./
COPY protocol/ protocol/
COPY capture/ capture/
COPY projector/ projector/
COPY backend/ backend/
COPY frontend/ frontend/
# The server needs no GPU. For a small image, point pip at PyTorch's CPU wheel index:
#   docker build --build-arg PIP_EXTRA_INDEX_URL=<the CPU wheel index> -t sentrycam .
ARG PIP_EXTRA_INDEX_URL=""
ARG TORCH_SPEC="torch==2.13.0"
# hadolint ignore=DL3013
RUN pip install "$TORCH_SPEC" && pip install .

USER 1000
VOLUME ["/data"]
EXPOSE 8765
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8765/health', timeout=4)"]
# Binding 0.0.0.0 requires SENTRYCAM_TOKEN: the server refuses to start without one.
CMD ["sentrycam", "serve", "--db", "/data/sentrycam.duckdb", "--host", "0.0.0.0", "--port", "8765"]
