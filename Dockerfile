# The controller image: `docker build -t rollouts-controller:0.1.0 .`
#
# Two stages: the first builds wheels for the package and its dependencies from this build
# context; the second installs them offline into a clean python:3.11-slim and runs as the
# unprivileged user 65532. The Deployment in deploy/kubernetes runs it with a read-only root
# filesystem (bytecode is compiled at install time, /tmp is an emptyDir).

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir --upgrade pip \
    && pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
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
