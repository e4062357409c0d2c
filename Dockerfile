# The controller image: `docker build -t rollouts-controller:0.1.0 .`
#
# Two stages on the same base: the first builds wheels for the package (pyproject.toml, src/)
# and its dependencies; the second installs only those wheels, offline (--no-index), into a
# clean image and runs as the unprivileged user 65532. The base is pinned to Python 3.11 on
# Debian bookworm, so the wheels built in the first stage match the second. The Deployment in
# deploy/kubernetes runs it with a read-only root filesystem (bytecode is compiled at install
# time, /tmp is an emptyDir). .dockerignore sends only pyproject.toml, README.md and src/.

FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels rollouts \
    && rm -rf /wheels \
    && groupadd --system --gid 65532 rollouts \
    && useradd --system --uid 65532 --gid 65532 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin rollouts
USER 65532:65532
WORKDIR /tmp
# 8090: /metrics, 8080: /healthz
EXPOSE 8090 8080
ENTRYPOINT ["rollouts"]
CMD ["controller", "--platform", "kubernetes"]
