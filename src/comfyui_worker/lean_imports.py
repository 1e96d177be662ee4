"""Keep modules that libraries import but the worker does not use out of its memory.

- littlehorse-client imports authlib's requests integration when it is imported (with it come
  authlib, requests, urllib3 and cryptography: about 12 MB of resident memory and 0.1 s) for
  one class, `OAuth2Session`, used only by workers that authenticate with OAuth. A
  placeholder module stands in for it: its `OAuth2Session` imports the real class when first
  called, and any other name loads the real module at once.
- httpx imports its command-line client when it is imported, which loads click and pygments
  when they happen to be installed (about 4 MB). The worker never runs that client; the
  `httpx` command, a process of its own, is unaffected.

Both only apply when they come first: once a library is loaded it is left as it is.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import Any

OAUTH_MODULE = "authlib.integrations.requests_client"
HTTPX_CLI_MODULE = "httpx._main"


class _Placeholder(ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            # The import system probes `__path__` & co.: answering would load the real thing.
            raise AttributeError(name)
        return getattr(_real_oauth_module(), name)


def _oauth2_session(*args: Any, **kwargs: Any) -> Any:
    return _real_oauth_module().OAuth2Session(*args, **kwargs)


def _real_oauth_module() -> ModuleType:
    if isinstance(sys.modules.get(OAUTH_MODULE), _Placeholder):
        del sys.modules[OAUTH_MODULE]
    return importlib.import_module(OAUTH_MODULE)


def defer_oauth_import() -> None:
    """Install the placeholder, unless the SDK or authlib's module is already loaded."""
    if OAUTH_MODULE in sys.modules or "littlehorse" in sys.modules:
        return
    placeholder = _Placeholder(OAUTH_MODULE)
    placeholder.OAuth2Session = _oauth2_session  # type: ignore[attr-defined]
    sys.modules[OAUTH_MODULE] = placeholder


def skip_httpx_cli() -> None:
    """httpx falls back to a stub `main` when its CLI module cannot be imported."""
    if "httpx" not in sys.modules:
        sys.modules.setdefault(HTTPX_CLI_MODULE, None)  # type: ignore[arg-type]
