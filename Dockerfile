# syntax=docker/dockerfile:1
# One image recipe for every service and the console (SERVICE=mailwarden-console):
#   docker build --build-arg SERVICE=mailbox-svc -t mailwarden/mailbox-svc .
# Stage 1 resolves only that service's dependencies from uv.lock into /app/.venv (no dev tools, no
# editable installs); stage 2 is a slim runtime with that venv only, running as a non-root user.
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
ARG SERVICE
RUN test -n "$SERVICE" || (echo "--build-arg SERVICE=<profile-svc|mailbox-svc|tester-svc|alert-svc|sender-svc|mailwarden-console> is required" && false)
RUN pip install --no-cache-dir "uv==0.13.9"
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PROJECT_ENVIRONMENT=/app/.venv UV_PYTHON_DOWNLOADS=never
WORKDIR /src
COPY pyproject.toml uv.lock ./
COPY libs ./libs
COPY services ./services
COPY apps ./apps
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package "$SERVICE"
# Fail the build, not the container start, when the service package is missing.
RUN /app/.venv/bin/python -c "import importlib, os; importlib.import_module(os.environ['SERVICE'].replace('-', '_') + '.app')"

FROM python:${PYTHON_VERSION}-slim AS runtime
ARG SERVICE
LABEL org.opencontainers.image.title="mailwarden ${SERVICE}"
ENV PATH=/app/.venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    MW_HTTP_HOST=0.0.0.0 MW_HTTP_PORT=8000 MW_SERVICE=${SERVICE}
# A fixed numeric uid/gid, so Kubernetes can verify runAsNonRoot without a passwd lookup.
RUN groupadd --system --gid 10001 mailwarden \
 && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home --shell /usr/sbin/nologin mailwarden
COPY --from=build --chown=10001:10001 /app/.venv /app/.venv
USER 10001:10001
WORKDIR /app
EXPOSE 8000
# Liveness only (no dependency checks); compose and Kubernetes probe /readyz for readiness themselves.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"]
STOPSIGNAL SIGTERM
# exec: uvicorn is PID 1 and gets SIGTERM itself; it gives open requests 10 s, then the lifespan stops
# the runtime within MW_SHUTDOWN_TIMEOUT_S (20 s). The module is the service name with '_' for '-'.
CMD ["sh", "-c", "exec uvicorn --factory \"$(echo \"$MW_SERVICE\" | tr - _).app:create_app\" --host \"$MW_HTTP_HOST\" --port \"$MW_HTTP_PORT\" --no-access-log --timeout-graceful-shutdown 10"]
