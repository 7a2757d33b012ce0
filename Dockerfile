# momentcast: `docker build -t momentcast . && docker run -p 8080:8080 momentcast`
# Point it at PostgreSQL with MOMENTCAST_DATABASE_URL (see compose.yaml); without it the
# embedded PostgreSQL keeps its data under /data/pg, so mount a volume there.
# MOMENTCAST_PROCESSES=N (or auto: one per core of the container's cpuset) runs N processes
# sharing the port under one supervising parent, which stays PID 1: SIGTERM reaches it and it
# stops them all within MOMENTCAST_SHUTDOWN_GRACE; one that dies stops the container with
# exit 1 (docs/operations.md, "Every core of a host").
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MOMENTCAST_HOST=0.0.0.0 \
    MOMENTCAST_PORT=8080 \
    MOMENTCAST_DATA_DIR=/data \
    MOMENTCAST_PROCESSES=1 \
    MOMENTCAST_RULES_DIR=/app/rules

WORKDIR /app
COPY pyproject.toml README.md ./
COPY service ./service
COPY migrations ./migrations
COPY rules ./rules

# migrations/ and service/ are only the build's sources: the installed package carries both
# (the migrations as service/store/migrations_sql/), so nothing reads them from /app.
RUN pip install --no-cache-dir . \
    && rm -rf build momentcast.egg-info service migrations \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin momentcast \
    && mkdir -p /data \
    && chown momentcast /data

USER 10001
VOLUME ["/data"]
EXPOSE 8080
# The port the service listens on: MOMENTCAST_PORT, also when `docker run -e` changes it.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('MOMENTCAST_PORT', '8080'), timeout=4)"]
CMD ["momentcast", "serve"]
