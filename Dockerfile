# One image recipe for every service: `docker build --build-arg SERVICE=mailbox-svc -t mailwarden/mailbox-svc .`
# Stage 1 resolves only that service's dependencies from uv.lock; stage 2 is a slim non-root runtime.
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
ARG SERVICE
RUN test -n "$SERVICE" || (echo "--build-arg SERVICE=<profile-svc|mailbox-svc|tester-svc|alert-svc> is required" && false)
RUN pip install --no-cache-dir "uv==0.13.9"
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
COPY pyproject.toml uv.lock ./
COPY libs ./libs
COPY services ./services
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package "$SERVICE"

FROM python:${PYTHON_VERSION}-slim AS runtime
ARG SERVICE
ENV PATH=/app/.venv/bin:$PATH PYTHONUNBUFFERED=1 MW_HTTP_HOST=0.0.0.0 MW_HTTP_PORT=8000 MW_SERVICE=${SERVICE}
RUN useradd --system --uid 10001 --home-dir /app mailwarden
COPY --from=build --chown=10001:10001 /app/.venv /app/.venv
USER 10001
WORKDIR /app
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"
# The module is the service name with '_' for '-', e.g. mailbox_svc.app:create_app.
CMD ["sh", "-c", "exec uvicorn --factory \"$(echo $MW_SERVICE | tr - _).app:create_app\" --host \"$MW_HTTP_HOST\" --port \"$MW_HTTP_PORT\" --no-access-log --timeout-graceful-shutdown 25"]
