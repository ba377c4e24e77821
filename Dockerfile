# replayer as a long-running consumer of the failure queue: `docker run IMAGE --queue URL --to s3://...`
# (or configure it with REPLAYER_* environment variables). Build from the repository root.
ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY src ./src
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    REPLAYER_HTTP_PORT=8080
# The package from its wheel, every dependency pinned by the constraints file CI tests with.
COPY constraints.txt /tmp/constraints.txt
COPY --from=build /wheels /tmp/wheels
RUN pip install --constraint /tmp/constraints.txt /tmp/wheels/*.whl \
    && rm -rf /tmp/wheels /tmp/constraints.txt \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin replayer
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('REPLAYER_HTTP_PORT', '8080'), timeout=3)"
# SIGTERM (docker stop, ECS, Kubernetes) finishes in-flight ranges within REPLAYER_GRACE_SECONDS
# (default 30: give the orchestrator's stop timeout a little more) and exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["replayer", "run"]
