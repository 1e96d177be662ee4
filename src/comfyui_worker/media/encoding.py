"""A body's Content-Encoding undone in bounded steps, so a size cap counts decoded bytes as they
are produced.

httpx decodes each chunk it reads whole: with stacked codings (`gzip, gzip`) a chunk of a few
kilobytes becomes gigabytes in memory before any cap sees it. Here no step yields more than
`STEP` bytes, however deep the codings go, and a consumer that stops asking stops the work.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

STEP = 64 * 1024
# zlib's window bits per coding: gzip framing, and the zlib format HTTP calls deflate.
WBITS = {"gzip": zlib.MAX_WBITS | 16, "x-gzip": zlib.MAX_WBITS | 16, "deflate": zlib.MAX_WBITS}
ACCEPT_ENCODING = "gzip, deflate"
"""The codings a fetch accepts, sent as its Accept-Encoding."""


class DecodeError(ValueError):
    """The body's coding is unknown, or it is not what it says it is."""


class ContentDecoder:
    """Undoes the codings a `Content-Encoding` header lists, the last applied first."""

    def __init__(self, header: str) -> None:
        codings = [c.strip().lower() for c in header.split(",")]
        codings = [c for c in codings if c and c != "identity"]
        if unknown := [c for c in codings if c not in WBITS]:
            raise DecodeError(
                f"is sent with Content-Encoding {', '.join(unknown)}, which inputs do not "
                f"accept (only {ACCEPT_ENCODING})"
            )
        self._layers = [(c, zlib.decompressobj(WBITS[c])) for c in reversed(codings)]

    def decode(self, data: bytes) -> Iterator[bytes]:
        """`data`'s decoded bytes, in pieces of at most STEP bytes (a body without coding
        passes as it came)."""
        pieces: Iterator[bytes] = iter((data,))
        for coding, layer in self._layers:
            pieces = _inflate(coding, layer, pieces)
        return pieces

    def finish(self) -> None:
        """Raise DecodeError if the body ended before one of its coded streams did."""
        for coding, layer in self._layers:
            if not layer.eof:
                raise DecodeError(f"ends before its {coding} stream does")


def _inflate(coding: str, layer: zlib._Decompress, pieces: Iterator[bytes]) -> Iterator[bytes]:
    for data in pieces:
        while True:
            try:
                out: bytes = layer.decompress(data, STEP)
            except zlib.error as exc:
                raise DecodeError(f"is not valid {coding} ({exc})") from exc
            data = layer.unconsumed_tail
            if out:
                yield out
            # A full step may have more behind it, even with all input taken.
            if not data and len(out) < STEP:
                break
