"""`python -m comfyui_worker.observability.probe [/healthz | /readyz]`: the container
healthcheck (Docker's HEALTHCHECK, compose's healthcheck). Exit 0 when the health server
answers 200, 1 otherwise, with one line saying why. Light on purpose: it runs every few
seconds, so it reads the settings and nothing else of the worker."""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

from ..settings import Settings
from .http_server import url_host

TIMEOUT = 5.0
PATHS = ("/healthz", "/readyz")
# A server bound to every address is asked on loopback (`::` may take IPv6 only).
LOOPBACK_FOR = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}


def probe_url(settings: Settings, path: str) -> str | None:
    """The URL to ask, or None when the health server is off (COMFYUI_WORKER_HEALTH_PORT=0)."""
    if settings.worker_health_port == 0:
        return None
    host = settings.worker_health_host
    host = LOOPBACK_FOR.get(host, host)
    return f"http://{url_host(host)}:{settings.worker_health_port}{path}"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = args[0] if args else PATHS[0]
    if path not in PATHS:
        print(f"probe: unknown path {path!r}; use one of {', '.join(PATHS)}", file=sys.stderr)
        return 2
    url = probe_url(Settings(), path)
    if url is None:
        print("probe: the health server is off (COMFYUI_WORKER_HEALTH_PORT=0); nothing to ask")
        return 0
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            print(f"probe: {url}: {response.status} {response.read(500).decode(errors='replace')}")
            return 0
    except urllib.error.HTTPError as exc:
        print(f"probe: {url}: {exc.code} {exc.read(500).decode(errors='replace')}")
    except OSError as exc:
        print(f"probe: {url}: {exc}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
