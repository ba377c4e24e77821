# replayer as a long-running consumer of the failure queue: `docker run IMAGE --queue URL --to s3://... --allow-stream GLOB`
# (or configure it with REPLAYER_* environment variables). Build from the repository root: `make image`
# (docker where a daemon runs, else buildah; see deploy/image/build.sh).
# PYTHON_IMAGE: any image with python and pip on PATH and pip allowed to install into it. Where the
# official image cannot be pulled, `make image` makes one from Debian's packages (mmdebstrap).
ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
# The runtime dependencies alone (from pyproject.toml, pinned by constraints.txt) as their own wheels,
# so a change to replayer/ rebuilds only the small wheel below, not this layer.
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip wheel --constraint constraints.txt --requirement /tmp/requirements.txt --wheel-dir /wheels/deps
COPY replayer ./replayer
RUN pip wheel --no-deps --wheel-dir /wheels/app .

FROM ${PYTHON_IMAGE}
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 REPLAYER_HTTP_PORT=8080
# Every dependency pinned by the constraints file CI tests with, from the wheels built above: no index.
COPY constraints.txt /tmp/constraints.txt
COPY --from=build /wheels/deps /tmp/wheels/deps
RUN pip install --no-index --constraint /tmp/constraints.txt /tmp/wheels/deps/*.whl \
    && rm -rf /tmp/wheels \
    && groupadd --gid 10001 replayer \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin replayer
COPY --from=build /wheels/app /tmp/wheels/app
RUN pip install --no-index --no-deps --constraint /tmp/constraints.txt /tmp/wheels/app/*.whl \
    && rm -rf /tmp/wheels /tmp/constraints.txt
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('REPLAYER_HTTP_PORT', '8080'), timeout=3)"]
# SIGTERM (docker stop, ECS, Kubernetes) finishes in-flight ranges within REPLAYER_GRACE_SECONDS
# (default 30: give the orchestrator's stop timeout a little more) and exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["replayer", "run"]
