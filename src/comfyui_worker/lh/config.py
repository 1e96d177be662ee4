"""The LittleHorse SDK's configuration (LHC_*/LHW_*): read, checked, described.

The SDK parses most of its settings only when it first needs them, deep in a connection or a
worker's start, and then fails with a bare ValueError or FileNotFoundError; `check_lh_config`
names the variable at start instead. `describe_rpc_error` puts a failed call to LittleHorse
on one line, with where it was sent; `rpc_error` makes it the exception the CLI reports.
"""

from __future__ import annotations

from pathlib import Path

import grpc
from littlehorse.config import (
    ALLOWED_PROTOCOLS,
    API_PORT,
    API_PROTOCOL,
    CA_CERT,
    CLIENT_CERT,
    CLIENT_KEY,
    GRPC_KEEPALIVE_TIME_MS,
    GRPC_KEEPALIVE_TIMEOUT_MS,
    NUM_WORKER_THREADS,
    LHConfig,
)

from ..exceptions import ConfigurationError, LittleHorseError, LittleHorseUnreachableError
from ..observability.logs import REDACTED
from ..settings import LH_SETTING_PREFIXES, Settings, env_file_variables, is_secret_name

# Whole numbers the SDK reads, with the least each may be.
WHOLE_NUMBERS = {
    API_PORT: 1,
    NUM_WORKER_THREADS: 1,
    GRPC_KEEPALIVE_TIME_MS: 1,
    GRPC_KEEPALIVE_TIMEOUT_MS: 1,
}
MAX_PORT = 65535
# Files the SDK reads for TLS.
TLS_FILES = (CA_CERT, CLIENT_CERT, CLIENT_KEY)
# Codes that say the call never reached a LittleHorse server.
UNREACHED = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def lh_config(settings: Settings) -> LHConfig:
    """The SDK's config from LHC_*/LHW_* variables, sized to the GPU when not set.

    The SDK reads only the process environment, so the LHC_*/LHW_* lines of `.env` are
    passed to it here; load() layers the environment over what it is given, so a real
    variable still wins over `.env`, and both over our default.

    The SDK's LHW_NUM_WORKER_THREADS (default 8) is how many claimed tasks may run at once
    per LittleHorse host, here for all served TaskDefs together (`ClaimSlots`), plus one
    poll outstanding per TaskDef. Claimed tasks beyond COMFYUI_MAX_IN_FLIGHT would only wait
    here while other GPUs idle, so it defaults to it.
    """
    config = LHConfig()
    config.load(
        {NUM_WORKER_THREADS: str(settings.max_in_flight), **env_file_variables(LH_SETTING_PREFIXES)}
    )
    check_lh_config(config)
    return config


def check_lh_config(config: LHConfig) -> None:
    """Raise ConfigurationError naming the variable for a setting the SDK would fail on.

    Reads the TLS files (small, once, before anything runs)."""
    for name, least in WHOLE_NUMBERS.items():
        raw = config.get(name)
        if raw is None:
            continue
        number = int(raw) if raw.strip().isdigit() else None
        if number is None or number < least or (name == API_PORT and number > MAX_PORT):
            top = f" to {MAX_PORT}" if name == API_PORT else " or more"
            raise ConfigurationError(f"{name}={raw!r}: must be a whole number, {least}{top}")
    protocol = config.get(API_PROTOCOL)
    if protocol is not None and protocol.upper() not in ALLOWED_PROTOCOLS:
        raise ConfigurationError(
            f"{API_PROTOCOL}={protocol!r}: must be {' or '.join(ALLOWED_PROTOCOLS)}"
        )
    if not config.is_secure():
        return
    for name in TLS_FILES:
        if (path := config.get(name)) is not None:
            try:
                Path(path).read_bytes()
            except OSError as exc:
                raise ConfigurationError(
                    f"{name}={path}: cannot read it ({exc.strerror or exc}); "
                    f"{API_PROTOCOL}=TLS reads it to connect"
                ) from exc


def describe_lh_config(config: LHConfig) -> str:
    """`KEY=value, ...` with every credential masked (the SDK masks only some)."""
    pairs = (line.partition("=") for line in str(config).splitlines())
    return ", ".join(
        f"{key}={REDACTED if is_secret_name(key) else value}" for key, _, value in sorted(pairs)
    )


def describe_rpc_error(exc: grpc.RpcError, config: LHConfig) -> str:
    """A failed call to LittleHorse on one line: where it went, the code, the first line of
    the details (the SDK's error prints a multi-line dump)."""
    code, details = exc.code(), (exc.details() or "").strip()
    detail = details.splitlines()[0] if details else "no detail"
    where = f"LittleHorse at {config.bootstrap_server} (LHC_API_HOST, LHC_API_PORT)"
    if code in UNREACHED:
        return f"cannot reach {where}: {code.name}: {detail}"
    return f"{where} answered {code.name}: {detail}"


def rpc_error(exc: grpc.RpcError, config: LHConfig, doing: str = "") -> LittleHorseError:
    """`exc` as one of ours, by whether the call reached a server (`doing`: a prefix for the
    message, e.g. "cannot register the TaskDefs: ")."""
    kind = LittleHorseUnreachableError if exc.code() in UNREACHED else LittleHorseError
    return kind(doing + describe_rpc_error(exc, config))
