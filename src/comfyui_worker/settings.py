"""Configuration from the environment (prefix `COMFYUI_`); see `.env.example`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

from dotenv import dotenv_values
from pydantic import (
    AliasChoices,
    AnyHttpUrl,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .bounds import MAX_RESULT_CEILING
from .constants import (
    DEFAULT_BASE_URL,
    DEFAULT_MAX_RESULT_BYTES,
    DEFAULT_READY_WAIT,
    DEFAULT_RETRYABLE_EXECUTION_ERRORS,
    TASK_NAMES,
    CleanupMode,
    CompletionMode,
    LogFormat,
    OutputMode,
)
from .exceptions import ConfigurationError, InvalidWorkflowError
from .workflow import load_workflow_file

LH_SETTING_PREFIXES = ("LHC_", "LHW_")
# The object stores' own variables: credentials, region, endpoint (read by obstore).
STORE_SETTING_PREFIXES = ("AWS_", "GOOGLE_", "AZURE_")
# The object-store URI schemes obstore builds S3, GCS and Azure clients for.
STORE_SCHEMES = ("s3", "s3a", "gs", "az", "azure", "adl", "abfs", "abfss")


class Settings(BaseSettings):
    """Every knob of the worker; keyword-only, with production defaults."""

    model_config = SettingsConfigDict(
        env_prefix="COMFYUI_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        frozen=True,
    )

    # Only COMFYUI_BASE_URL (env or .env) and the keywords `comfyui_base_url=`/`base_url=`
    # set this: an alias without the prefix would let any BASE_URL variable redirect us.
    base_url: AnyHttpUrl = Field(
        default=AnyHttpUrl(DEFAULT_BASE_URL),
        validation_alias=AliasChoices("comfyui_base_url"),
        description="ComfyUI server root, e.g. http://127.0.0.1:8188",
    )
    output_dir: Path = Field(
        default=Path("/comfyui/output"),
        description="ComfyUI's output directory as mounted in this container",
    )
    temp_dir: Path = Field(
        default=Path("/comfyui/temp"),
        description="ComfyUI's temp directory (PreviewImage etc.) as mounted here",
    )
    input_dir: Path = Field(
        default=Path("/comfyui/input"),
        description="ComfyUI's input directory (LoadImage) as mounted here",
    )
    request_timeout: float = Field(default=30.0, gt=0, description="Seconds per HTTP request")
    retries: int = Field(default=3, ge=0, le=20, description="Retries of a failed HTTP request")
    backoff_base: float = Field(default=0.5, ge=0, description="First retry delay, seconds")
    backoff_max: float = Field(default=10.0, ge=0, description="Longest retry delay, seconds")
    poll_interval: float = Field(default=0.25, gt=0, description="Seconds between polls")
    reconcile_interval: float = Field(
        default=5.0,
        gt=0,
        description="In websocket mode, seconds between safety checks of /history and /queue",
    )
    job_deadline: float = Field(default=1800.0, gt=0, description="Total seconds one job may take")
    completion_mode: CompletionMode = Field(default=CompletionMode.WEBSOCKET)
    max_in_flight: int = Field(
        default=2,
        ge=1,
        description="Jobs this process has in ComfyUI at once (running + queued)",
    )
    max_workflow_bytes: int = Field(
        default=512_000,
        gt=0,
        description="Largest accepted workflow JSON; LittleHorse records stop near 1 MB",
    )
    templates_dir: Path = Field(
        default=Path("templates"),
        description="Template store: base.yaml, workflows.yaml and the workflow files they name",
    )

    shutdown_grace: float = Field(
        default=25.0,
        ge=0,
        description="Seconds claimed tasks get to finish after SIGTERM (Kubernetes gives 30)",
    )
    interrupt_on_shutdown: bool = Field(
        default=False,
        description="Interrupt prompts still running after the grace instead of leaving them "
        "for a retry to attach to",
    )
    ready_wait: float = Field(
        default=DEFAULT_READY_WAIT,
        ge=0,
        description="Seconds a claimed task waits for ComfyUI to answer before it starts; past "
        "that it fails retryably without starting",
    )
    warmup_workflow: Path | None = Field(
        default=None,
        description="API-format workflow run before the first claim and after ComfyUI restarts",
    )
    retryable_execution_errors: Annotated[tuple[str, ...], NoDecode] = Field(
        default=DEFAULT_RETRYABLE_EXECUTION_ERRORS,
        description="Substrings of an execution error's type or message that make it retryable",
    )
    tasks: Annotated[tuple[str, ...], NoDecode] = Field(
        default=TASK_NAMES,
        min_length=1,
        description="The TaskDefs `serve` and `register` handle: each one served keeps a poll "
        "outstanding, so serve only those the WfSpecs use",
    )
    job_namespace: str = Field(
        default="",
        max_length=200,
        description="Part of every prompt id: workers of one LittleHorse cluster share it, "
        "workers of different clusters that share a ComfyUI must not",
    )

    @field_validator("warmup_workflow", mode="before")
    @classmethod
    def _no_warmup_when_empty(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("warmup_workflow")
    @classmethod
    def _check_warmup(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        # Read once here so a missing, UI-format or too large file stops the start, naming the
        # variable (serve loads it again with the same limit).
        if value is not None:
            try:
                load_workflow_file(value, max_bytes=info.data.get("max_workflow_bytes"))
            except InvalidWorkflowError as exc:
                raise ValueError(f"COMFYUI_WARMUP_WORKFLOW: {exc}") from None
        return value

    @field_validator("retryable_execution_errors", "tasks", "input_stores", mode="before")
    @classmethod
    def _split_list(cls, value: object, info: ValidationInfo) -> object:
        # Comma-separated in the environment; a JSON array is accepted too.
        if not isinstance(value, str):
            return value
        if value.lstrip().startswith("["):
            try:
                return json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"COMFYUI_{str(info.field_name).upper()} is not a valid JSON array: {exc}"
                ) from exc
        return tuple(part.strip() for part in value.split(",") if part.strip())

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if unknown := [name for name in value if name not in TASK_NAMES]:
            raise ValueError(
                f"COMFYUI_TASKS names unknown task(s) {', '.join(map(repr, unknown))}; "
                f"choose among {', '.join(TASK_NAMES)}"
            )
        return tuple(dict.fromkeys(value))

    worker_health_port: int = Field(
        default=8000,
        ge=0,
        le=65535,
        description="Port of /healthz, /readyz, /metrics and /jobs in `serve`; 0 turns it off",
    )
    worker_health_host: str = Field(
        default="0.0.0.0", min_length=1, description="Address the health server binds to"
    )
    log_format: LogFormat = Field(
        default=LogFormat.TEXT, description="text (one readable line) or json (one object a line)"
    )

    output_mode: OutputMode = Field(
        default=OutputMode.PATH,
        description="How outputs are delivered unless a job says otherwise: path | base64 | store",
    )
    output_store: str | None = Field(
        default=None,
        description="Where store mode uploads outputs: s3://bucket/prefix (gs://, az:// too)",
    )
    input_stores: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="The stores `uri` inputs may be read from (scheme://bucket or "
        "scheme://bucket/prefix); none listed: the bucket of the output store",
    )
    max_result_bytes: int = Field(
        default=DEFAULT_MAX_RESULT_BYTES,
        gt=0,
        le=MAX_RESULT_CEILING,
        description="Largest task result or exception LittleHorse is sent (serialized JSON; "
        "less where the TaskRun's inputs and earlier attempts fill its record); long texts are "
        "cut, and a result that still does not fit is comfyui-output-too-large",
    )
    max_inline_bytes: int = Field(
        default=700_000,
        gt=0,
        description="base64 mode: most base64 text one result may carry",
    )
    store_part_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=5 * 1024 * 1024,
        description="store mode: multipart upload part size (S3's minimum is 5 MiB)",
    )
    store_timeout: float = Field(
        default=60.0,
        gt=0,
        description="Seconds within which a failed object-store request is retried",
    )
    max_input_bytes: int = Field(
        default=50_000_000, gt=0, description="Largest accepted input file"
    )
    input_timeout: float = Field(
        default=60.0, gt=0, description="Seconds to fetch one input (URL or object store)"
    )
    max_input_downloads: int = Field(
        default=4,
        ge=1,
        description="Input files fetched and uploaded to ComfyUI at once by this process; "
        "outside the in-flight slots, so a slow download never keeps ComfyUI idle",
    )
    input_allow_private_urls: bool = Field(
        default=False,
        description="Allow input URLs on private, loopback and link-local addresses",
    )
    cleanup: CleanupMode = Field(
        default=CleanupMode.NONE,
        description="Remove a job's uploaded inputs and/or stored outputs from ComfyUI's folders",
    )

    @field_validator("output_store")
    @classmethod
    def _store_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return _store_location(value, "COMFYUI_OUTPUT_STORE")

    @field_validator("input_stores")
    @classmethod
    def _store_urls(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_store_location(store, "COMFYUI_INPUT_STORES") for store in value)

    @model_validator(mode="after")
    def _store_mode_needs_a_store(self) -> Settings:
        if self.output_mode is OutputMode.STORE and self.output_store is None:
            raise ValueError(
                "COMFYUI_OUTPUT_MODE=store needs COMFYUI_OUTPUT_STORE (e.g. s3://bucket/prefix)"
            )
        return self

    @field_validator("base_url", mode="before")
    @classmethod
    def _require_url(cls, value: object) -> object:
        if value is None or (isinstance(value, str) and not value.strip()):
            raise ValueError(
                f"COMFYUI_BASE_URL must be set to ComfyUI's URL, e.g. {DEFAULT_BASE_URL}"
            )
        return value

    @field_validator("output_dir", "temp_dir", "input_dir", mode="before")
    @classmethod
    def _require_dir(cls, value: object, info: ValidationInfo) -> object:
        # Path("") is the working directory: an empty variable would silently mean "here".
        if value is None or (isinstance(value, str) and not value.strip()):
            raise ValueError(
                f"COMFYUI_{str(info.field_name).upper()} is empty; set it to ComfyUI's folder "
                "as mounted here"
            )
        return value

    @property
    def mounted_dirs(self) -> tuple[str, ...]:
        """The folders this process reads: results point into output and temp; the input
        folder is read only to remove a job's uploaded inputs (COMFYUI_CLEANUP)."""
        return ("output_dir", "temp_dir", *(("input_dir",) if self.cleanup.inputs else ()))

    def check_dirs(self, *fields: str) -> None:
        """Raise ConfigurationError unless each named folder exists and can be listed.

        Blocking (a stat on a possibly remote volume): call it before the event loop runs
        or through asyncio.to_thread.
        """
        for name in fields:
            path: Path = getattr(self, name)
            variable = f"COMFYUI_{name.upper()}"
            if not path.is_dir():
                raise ConfigurationError(
                    f"{variable}={path} is not a directory (is the volume mounted here?)"
                )
            if not os.access(path, os.R_OK | os.X_OK):
                raise ConfigurationError(f"{variable}={path} cannot be read by this process")

    @property
    def base_url_str(self) -> str:
        """The base URL without a trailing slash, ready to join with a path."""
        return str(self.base_url).rstrip("/")

    @property
    def ws_url(self) -> str:
        url = self.base_url_str
        return (
            ("wss://" + url[len("https://") :])
            if url.startswith("https://")
            else ("ws://" + url[len("http://") :])
        )


def _store_location(value: str, variable: str) -> str:
    """`value` stripped of spaces and a trailing slash, if it is scheme://bucket[/prefix]."""
    scheme, sep, rest = value.strip().partition("://")
    if not sep or scheme not in STORE_SCHEMES or not rest.split("/")[0]:
        raise ValueError(
            f"{variable} must look like s3://bucket/prefix (or gs://, az://...; schemes: "
            f"{', '.join(STORE_SCHEMES)}), got {value!r}"
        )
    return value.strip().rstrip("/")


def env_file_variables(prefixes: tuple[str, ...], env_file: Path = Path(".env")) -> dict[str, str]:
    """The entries of the `.env` file (if there is one) named with one of `prefixes` that
    the environment does not set.

    The LittleHorse SDK (LHC_*/LHW_*) and obstore (AWS_*, GOOGLE_*, AZURE_*) read only the
    process environment; these go to them underneath it, so a real variable still wins, as
    it does for our own settings.
    """
    return {
        key: value
        for key, value in dotenv_values(env_file).items()
        if key.startswith(prefixes) and value is not None and key not in os.environ
    }


def describe_validation_error(exc: ValidationError) -> str:
    """One line per bad setting, named by its environment variable, not its field."""
    lines = []
    for error in exc.errors():
        field_name = str(error["loc"][0]) if error["loc"] else "?"
        env_name = "COMFYUI_" + field_name.removeprefix("comfyui_").upper()
        value = error.get("input")
        shown = (
            f" (got {value!r})"
            if isinstance(value, str | int | float) and not is_secret_name(env_name)
            else ""
        )
        lines.append(f"{env_name}: {error['msg']}{shown}")
    return "; ".join(lines)


# Names of settings whose values are credentials: never logged, never echoed in errors.
# Covers the SDK's OAuth secret and the object stores' variables (AWS_SECRET_ACCESS_KEY,
# AWS_SESSION_TOKEN, AZURE_STORAGE_ACCOUNT_KEY, AZURE_CLIENT_SECRET, GOOGLE_SERVICE_ACCOUNT_KEY).
SECRET_NAME_MARKERS = (
    "SECRET",
    "PASSWORD",
    "TOKEN",
    "CREDENTIAL",
    "ACCESS_KEY",
    "PRIVATE_KEY",
    "ACCOUNT_KEY",
    "SAS_KEY",
)


def is_secret_name(name: str) -> bool:
    upper = name.upper()
    return any(marker in upper for marker in SECRET_NAME_MARKERS)
