"""Run ComfyUI workflows as LittleHorse tasks."""

from .lean_imports import defer_oauth_import, skip_httpx_cli

# Before any module of the package imports the libraries concerned.
defer_oauth_import()
skip_httpx_cli()

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("comfyui-worker")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
