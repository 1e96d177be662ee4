# syntax=docker/dockerfile:1.7
# Build: resolve exactly what uv.lock pins (no dev dependencies) into /app/.venv.
FROM python:3.11-slim-bookworm AS build
COPY --from=ghcr.io/astral-sh/uv:0.13 /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
WORKDIR /app
# Dependencies first, so that a source change does not reinstall them.
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-install-project
COPY README.md ./
COPY src ./src
RUN uv sync --frozen --no-dev

# Run: the virtualenv and the source only; no uv, no compilers, not root.
FROM python:3.11-slim-bookworm
RUN groupadd --system --gid 10001 worker \
    && useradd --system --uid 10001 --gid worker --no-create-home --shell /usr/sbin/nologin worker
WORKDIR /app
COPY --from=build --chown=worker:worker /app /app
ENV PATH="/app/.venv/bin:$PATH" PYTHONUNBUFFERED=1
USER 10001:10001
# serve's liveness: its event loop answers /healthz on COMFYUI_WORKER_HEALTH_PORT (with the
# health server off, the probe says so and passes). Kubernetes uses its own probes instead.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-m", "comfyui_worker.observability.probe", "/healthz"]
ENTRYPOINT ["comfyui-worker"]
CMD ["serve"]
