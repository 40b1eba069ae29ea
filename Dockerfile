# sqs-supervisor container image.
#
#   docker build -t sqs-supervisor .
#   docker run --rm -p 9102:9102 -v "$PWD/workers.yaml:/etc/sqs-supervisor/workers.yaml:ro" sqs-supervisor
#
# The supervisor is built to be PID 1: it reaps every zombie, drains on SIGTERM and reloads on
# SIGHUP, so it needs no init shim (tini, dumb-init) in front of it. Putting one there would
# also change who receives SIGTERM first.

# ---- builder: install the package and its runtime dependencies into a venv ----------------
FROM python:3.11-slim AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# Only what `pip install .` reads (pyproject's readme is README.md): the .dockerignore keeps
# everything else out of the build context, so tests and deploy files never change a layer.
COPY pyproject.toml README.md ./
COPY supervisor ./supervisor
COPY handlers ./handlers

# Runtime dependencies only. EXTRAS adds optional extras for special builds; the compose
# stack sets EXTRAS=local so the same image can also run the local SQS endpoint (moto).
# The package is built from this directory, so there is no version to pin (DL3013 is about
# packages from an index; the dependencies are bounded by pyproject.toml).
ARG EXTRAS=""
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".${EXTRAS:+[${EXTRAS}]}" \
    && sqs-supervisor --version

# ---- runtime --------------------------------------------------------------------------------
FROM python:3.11-slim

# A fixed numeric uid/gid (10001) so Kubernetes' runAsNonRoot can verify it and runAsUser
# matches without a passwd lookup. -l avoids a huge lastlog file for a high uid (DL3046).
# /var/lib/sqs-supervisor holds state such as the SQLite job store.
RUN groupadd --system --gid 10001 sqs \
    && useradd --system --no-log-init --uid 10001 --gid sqs \
        --home-dir /var/lib/sqs-supervisor --shell /usr/sbin/nologin sqs \
    && install -d -o sqs -g sqs -m 0750 /var/lib/sqs-supervisor

# The venv's python links to /usr/local/bin/python3.11, which is the same in both stages.
COPY --from=builder /opt/venv /opt/venv
# A default config so the image runs as is (the demo bindings); mount your own over it.
COPY config/example.yaml /etc/sqs-supervisor/workers.yaml

# PYTHONUNBUFFERED: log lines reach `docker logs` / the kubelet as they are written.
# PYTHONDONTWRITEBYTECODE: the root filesystem may be read-only (Kubernetes manifests).
# METRICS_HOST: the example config binds ${METRICS_HOST:-127.0.0.1}; in a container the
# port must be reachable from outside (Prometheus, the kubelet's probes).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    METRICS_HOST=0.0.0.0

USER 10001:10001
WORKDIR /var/lib/sqs-supervisor

EXPOSE 9102

# SIGTERM is the graceful drain (release prefetched messages, let in-flight jobs finish within
# drain_timeout, exit 0). Give the container more than drain_timeout + the long-poll wait
# before SIGKILL: `docker stop -t 90`, stop_grace_period: 90s, terminationGracePeriodSeconds: 90.
STOPSIGNAL SIGTERM

# slim has no curl: ask /healthz with the interpreter that is already there. Any error
# (connection refused, 503, timeout) raises and exits 1, which marks the container unhealthy.
# METRICS_PORT is the variable the example config reads for its port.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('METRICS_PORT', '9102'), timeout=4)"]

ENTRYPOINT ["sqs-supervisor"]
CMD ["run", "-c", "/etc/sqs-supervisor/workers.yaml"]
