"""Object storage through obstore: output uploads, input downloads, presigned URLs.

Credentials, region and endpoint come from the standard variables (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION, AWS_ENDPOINT_URL, AWS_ALLOW_HTTP;
GOOGLE_* and AZURE_* for gs:// and az://), read by obstore itself from the process
environment (those only in `.env` are put there first), which also follows the rest of each
cloud's credential chain (web identity, instance metadata). Error messages name the bucket
and the store's error code, never a credential. Inputs are read only from the stores the
input guard allows (`fetch.InputGuard.store_location`). `check_output_store` tries the output
store once at start, so that a store that cannot work stops `serve` before any GPU work.

obstore is imported on first use (about 4 MB of resident memory): a worker none of whose jobs
touch a store never loads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..exceptions import (
    ConfigurationError,
    InputFetchError,
    InvalidInputError,
    OutputStoreDeniedError,
    OutputStoreError,
)
from ..settings import STORE_SETTING_PREFIXES, Settings, env_file_variables
from ..streams import FileSink, HashingReader
from .fetch import InputGuard, shown
from .location import Location as Location  # re-exported: upload targets are built from it

if TYPE_CHECKING:
    from obstore.store import ObjectStore

log = logging.getLogger(__name__)

# Uploads in flight per file: with `part_bytes` parts this bounds the memory one upload uses.
UPLOAD_CONCURRENCY = 2
SHA256_ATTRIBUTE = "sha256"
# S3 error codes that no retry can fix: credentials refused or the bucket missing.
DENIED_CODES = (
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "NoSuchBucket",
    "AllAccessDisabled",
    "AccountProblem",
    "InvalidToken",
    "ExpiredToken",
)
# Where each store's credentials come from, to name them when a store cannot be used. With
# none of them set, obstore asks the cloud's metadata service, which answers only there.
CREDENTIAL_VARIABLES = {
    "s3": (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    ),
    "gs": (
        "GOOGLE_SERVICE_ACCOUNT",
        "GOOGLE_SERVICE_ACCOUNT_KEY",
        "GOOGLE_APPLICATION_CREDENTIALS",
    ),
    "az": (
        "AZURE_STORAGE_ACCOUNT_KEY",
        "AZURE_STORAGE_SAS_KEY",
        "AZURE_CLIENT_SECRET",
        "AZURE_FEDERATED_TOKEN_FILE",
    ),
}
# Asked for at start; it need not exist: any answer of the store proves the credentials.
CHECK_KEY = ".comfyui-worker-start-check"


class UploadCancelled(Exception):
    """What obstore's next read of a cancelled upload's file raises, so that it aborts."""


@dataclass(frozen=True, slots=True)
class StoredObject:
    key: str
    uri: str
    size: int
    sha256: str
    e_tag: str | None


class ObjectStores:
    """One obstore client per bucket, built on first use from the environment.

    `guard` says which objects inputs may be read from (by default none): a client is only
    ever built for a store of the deployment's, never for a scheme or bucket an input names.
    """

    def __init__(
        self, *, timeout: float, retries: int, part_bytes: int, guard: InputGuard | None = None
    ) -> None:
        self.timeout = timeout
        self.retries = retries
        self.part_bytes = part_bytes
        self.guard = guard or InputGuard()
        self._stores: dict[tuple[str, str], ObjectStore] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> ObjectStores:
        # obstore reads only the process environment, where `.env` is not.
        os.environ.update(env_file_variables(STORE_SETTING_PREFIXES))
        return cls(
            timeout=settings.store_timeout,
            retries=settings.retries,
            part_bytes=settings.store_part_bytes,
            guard=InputGuard.from_settings(settings),
        )

    def store(self, scheme: str, bucket: str) -> ObjectStore:
        from obstore.store import from_url

        if (scheme, bucket) not in self._stores:
            self._stores[(scheme, bucket)] = from_url(
                f"{scheme}://{bucket}",
                retry_config={
                    "max_retries": self.retries,
                    "retry_timeout": timedelta(seconds=self.timeout),
                },
            )
        return self._stores[(scheme, bucket)]

    async def upload(self, path: Path, where: Location, *, mime: str) -> StoredObject:
        """Stream `path` to `where` (multipart above one part), hashing in the same read.

        A failed or cancelled upload leaves no multipart upload open and its file closed.
        """
        import obstore

        size = (await asyncio.to_thread(path.stat)).st_size
        reader = HashingReader(path)
        put = asyncio.ensure_future(
            obstore.put_async(
                self.store(where.scheme, where.bucket),
                where.key,
                reader,
                attributes={"Content-Type": mime},
                chunk_size=self.part_bytes,
                use_multipart=size > self.part_bytes,
                max_concurrency=UPLOAD_CONCURRENCY,
            )
        )
        try:
            # obstore aborts a multipart upload whose source fails, not one whose call is
            # dropped: cancelled, it is told through the source, and the upload's parts go.
            result = await asyncio.shield(put)
        except asyncio.CancelledError:
            reader.stop(UploadCancelled(f"the upload of {where.uri()} was cancelled"))
            with contextlib.suppress(Exception):
                await put
            raise
        except store_errors() as exc:
            raise store_error(exc, where, "upload") from exc
        finally:
            await reader.aclose()
        return StoredObject(
            key=where.key,
            uri=where.uri(),
            size=reader.size,
            sha256=reader.sha256,
            e_tag=result.get("e_tag"),
        )

    async def exists(self, where: Location) -> bool:
        import obstore
        from obstore.exceptions import NotFoundError

        try:
            await obstore.head_async(self.store(where.scheme, where.bucket), where.key)
        except (NotFoundError, FileNotFoundError):
            return False
        except store_errors() as exc:
            raise store_error(exc, where, "look-up") from exc
        return True

    async def copy(self, source: Location, where: Location) -> None:
        """A copy inside the store (no bytes through this process); one bucket only."""
        import obstore

        if (source.scheme, source.bucket) != (where.scheme, where.bucket):
            raise ValueError(f"cannot copy {source.uri()} to another bucket ({where.uri()})")
        try:
            await obstore.copy_async(
                self.store(where.scheme, where.bucket), source.key, where.key, overwrite=True
            )
        except store_errors() as exc:
            raise store_error(exc, where, "copy") from exc

    async def presign(self, where: Location, seconds: int) -> str:
        import obstore
        from obstore.store import AzureStore, GCSStore, S3Store

        store = self.store(where.scheme, where.bucket)
        if not isinstance(store, S3Store | GCSStore | AzureStore):
            raise OutputStoreError(f"{where.scheme}:// cannot presign URLs", bucket=where.bucket)
        try:
            return str(
                await obstore.sign_async(store, "GET", where.key, timedelta(seconds=seconds))
            )
        except store_errors() as exc:
            raise store_error(exc, where, "presign") from exc

    async def download(self, name: str, uri: str, dest: Path, *, max_bytes: int) -> tuple[int, str]:
        """An input's object into `dest`, refused past `max_bytes`: (size, sha256)."""
        import obstore

        where = self.guard.store_location(name, uri)
        unusable: tuple[type[Exception], ...] = (ValueError, *store_errors())
        try:
            store = self.store(where.scheme, where.bucket)
        except unusable as exc:
            raise InvalidInputError(
                f"cannot use object-store URI {shown(uri)!r}: {_first_line(exc)}",
                input_name=name,
                rule="uri",
            ) from exc
        try:
            result = await obstore.get_async(store, where.key)
            if result.meta["size"] > max_bytes:
                raise InvalidInputError(
                    f"{shown(uri)} is larger than COMFYUI_MAX_INPUT_BYTES "
                    f"({result.meta['size']} > {max_bytes} bytes)",
                    input_name=name,
                    rule="max-bytes",
                )
            async with FileSink(dest) as sink:
                async for chunk in result.stream(min_chunk_size=1024 * 1024):
                    await sink.write(bytes(chunk))
        except store_errors() as exc:
            error = store_error(exc, where, "download")
            cls = (
                InvalidInputError if isinstance(error, OutputStoreDeniedError) else InputFetchError
            )
            raise cls(str(error), input_name=name, rule="uri") from exc
        return sink.size, sink.sha256


async def check_output_store(settings: Settings, stores: ObjectStores) -> None:
    """Ask COMFYUI_OUTPUT_STORE for an object once; a ConfigurationError naming what is
    missing if no answer comes (no credentials, no such endpoint). Refused access is only a
    warning: credentials that may write but not read are enough for delivery."""
    if settings.output_store is None:
        return
    import obstore
    from obstore.exceptions import PermissionDeniedError, UnauthenticatedError

    where = Location.parse(settings.output_store)
    unanswered: tuple[type[Exception], ...] = (*store_errors(), ValueError, TimeoutError)
    try:
        async with asyncio.timeout(settings.store_timeout):
            store = stores.store(where.scheme, where.bucket)
            await obstore.head_async(store, f"{where.key}/{CHECK_KEY}".lstrip("/"))
    except FileNotFoundError:
        return  # an answer: the credentials resolved
    except (PermissionDeniedError, UnauthenticatedError, PermissionError) as exc:
        log.warning("COMFYUI_OUTPUT_STORE=%s: %s", settings.output_store, _first_line(exc))
        return
    except unanswered as exc:
        names = CREDENTIAL_VARIABLES.get(where.scheme, ())
        hint = (
            f"none of {', '.join(names)} is set (in the environment or .env), and no other "
            "credentials were found"
            if not any(os.environ.get(name) for name in names)
            else "check its endpoint and credentials"
        )
        raise ConfigurationError(
            f"COMFYUI_OUTPUT_STORE={settings.output_store}: the store does not answer "
            f"({_first_line(exc)}); {hint}"
        ) from exc


def store_errors() -> tuple[type[Exception], ...]:
    """What a store call raises: obstore's errors, and Python's FileNotFoundError /
    PermissionError, which obstore raises for not found / denied."""
    from obstore.exceptions import BaseError

    return (BaseError, FileNotFoundError, PermissionError)


def store_error(exc: Exception, where: Location, action: str) -> OutputStoreError:
    """Denied (credentials refused, bucket or object missing) or retryable (the rest)."""
    from obstore.exceptions import NotFoundError, PermissionDeniedError, UnauthenticatedError

    code = _s3_code(str(exc))
    denied = PermissionDeniedError | UnauthenticatedError | PermissionError
    if isinstance(exc, denied) or code in DENIED_CODES:
        why = "the bucket does not exist" if code == "NoSuchBucket" else "access was refused"
        return OutputStoreDeniedError(
            f"{action} of {where.uri()} failed: {why} ({code or type(exc).__name__}); check "
            f"the bucket {where.bucket!r} and the store credentials",
            bucket=where.bucket,
        )
    if isinstance(exc, NotFoundError | FileNotFoundError):
        return OutputStoreDeniedError(
            f"{action} of {where.uri()} failed: not found in bucket {where.bucket!r}",
            bucket=where.bucket,
        )
    return OutputStoreError(
        f"{action} of {where.uri()} failed (retryable): {_first_line(exc)}", bucket=where.bucket
    )


def _s3_code(message: str) -> str | None:
    match = re.search(r"<Code>([A-Za-z]+)</Code>", message)
    return match.group(1) if match else None


def _first_line(exc: Any) -> str:
    # obstore appends a multi-line debug dump; the first line says what happened.
    return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
