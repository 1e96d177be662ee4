"""Run ComfyUI workflows as LittleHorse tasks."""

from .lean_imports import defer_oauth_import, skip_httpx_cli

# Before any module of the package imports the libraries concerned.
defer_oauth_import()
skip_httpx_cli()
