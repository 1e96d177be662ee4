"""Run ComfyUI workflows as LittleHorse tasks."""

from importlib.metadata import PackageNotFoundError, version

from .lean_imports import defer_oauth_import, skip_httpx_cli

# Before any module of the package imports the libraries concerned.
defer_oauth_import()
skip_httpx_cli()

try:
    __version__ = version("comfyui-worker")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
