# syntax=docker/dockerfile:1.7
# Build: resolve exactly what uv.lock pins (no dev dependencies) into /app/.venv, with the
# project installed as a wheel (not editable), so the virtualenv needs no source tree.
FROM python:3.11-slim-bookworm AS build
COPY --from=ghcr.io/astral-sh/uv:0.13 /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
WORKDIR /app
# Dependencies first, so that a source change does not reinstall them.
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-editable --no-install-project
COPY README.md ./
COPY src ./src
RUN uv sync --frozen --no-dev --no-editable

# Run: the virtualenv only; no uv, no compilers, no source, not root. Its files belong to
# root: the worker can read them, not change them.
FROM python:3.11-slim-bookworm
# Where the source is, e.g. --build-arg SOURCE_URL=https://git.example.com/comfyui-worker
ARG SOURCE_URL=""
LABEL org.opencontainers.image.title="comfyui-worker" \
      org.opencontainers.image.description="Run ComfyUI workflows as tasks of the LittleHorse workflow engine" \
      org.opencontainers.image.version="0.2.0" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="${SOURCE_URL}"
RUN groupadd --system --gid 10001 worker \
    && useradd --system --uid 10001 --gid worker --no-create-home --shell /usr/sbin/nologin worker
WORKDIR /app
COPY --from=build /app/.venv /app/.venv
ENV PATH="/app/.venv/bin:$PATH" PYTHONUNBUFFERED=1
USER 10001:10001
# /healthz, /readyz, /metrics and /jobs (COMFYUI_WORKER_HEALTH_PORT).
EXPOSE 8000
# serve's liveness: its event loop answers /healthz on COMFYUI_WORKER_HEALTH_PORT (with the
# health server off, the probe says so and passes). Kubernetes uses its own probes instead.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-m", "comfyui_worker.observability.probe", "/healthz"]
ENTRYPOINT ["comfyui-worker"]
CMD ["serve"]
