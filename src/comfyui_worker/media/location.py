"""`scheme://bucket/key`: where an object is, for the outputs delivered and the inputs read."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Location:
    """`scheme://bucket/key`, split."""

    scheme: str
    bucket: str
    key: str

    @classmethod
    def parse(cls, uri: str) -> Location:
        scheme, sep, rest = uri.partition("://")
        bucket, _, key = rest.partition("/")
        if not sep or not scheme or not bucket:
            raise ValueError(f"{uri!r} is not scheme://bucket/key")
        return cls(scheme.lower(), bucket, key.strip("/"))

    def uri(self, key: str | None = None) -> str:
        return f"{self.scheme}://{self.bucket}/{self.key if key is None else key}"

    def holds(self, other: Location) -> bool:
        """Whether `other` is in this store: its bucket, and under its key as a prefix."""
        if (other.scheme, other.bucket) != (self.scheme, self.bucket):
            return False
        return not self.key or other.key == self.key or other.key.startswith(self.key + "/")
