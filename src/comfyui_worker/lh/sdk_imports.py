"""Keep what the LittleHorse SDK imports but a worker seldom uses out of `serve`'s memory.

littlehorse-client imports authlib's requests integration when it is imported (with authlib
come requests, urllib3 and cryptography: about 17 MB of resident memory and 0.1 s), for one
class, `OAuth2Session`, used only by workers that authenticate with OAuth. A placeholder
module stands in for it until then: its `OAuth2Session` imports the real class when first
called, and any other name loads the real module at once.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import Any

OAUTH_MODULE = "authlib.integrations.requests_client"


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
