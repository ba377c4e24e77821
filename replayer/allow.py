"""What replayer may touch: configuration decides, never the message. Deny by default.

`AllowList` says which streams may be read (globs on the stream ARN); `BucketAllowList`
which S3 objects may be believed as failure records (bucket or bucket/prefix). Both
allow nothing when empty; `*` allows everything, and must be said explicitly.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["EVERYTHING", "AllowList", "BucketAllowList"]

EVERYTHING = "*"


@dataclass(frozen=True, slots=True)
class AllowList:
    """Glob patterns on the stream ARN. Empty allows nothing; `*` allows every stream."""

    patterns: tuple[str, ...] = ()

    @classmethod
    def of(cls, patterns: Iterable[str]) -> AllowList:
        return cls(tuple(p.strip() for p in patterns if p.strip()))

    @classmethod
    def from_env(cls, flags: Iterable[str] = ()) -> AllowList:
        """The `--allow-stream` patterns; without any, `REPLAYER_ALLOW_STREAMS` (comma-separated).

        A flag wins over its environment variable, as for every other setting.
        """
        patterns = list(flags) or os.environ.get("REPLAYER_ALLOW_STREAMS", "").split(",")
        return cls.of(patterns)

    @property
    def empty(self) -> bool:
        return not self.patterns

    def allows(self, stream_arn: str) -> bool:
        return any(fnmatch.fnmatchcase(stream_arn, p) for p in self.patterns)


@dataclass(frozen=True, slots=True)
class BucketAllowList:
    """`BUCKET` or `BUCKET/PREFIX` entries (a prefix matches the keys it begins); `*`: any.

    Empty allows nothing.
    """

    entries: tuple[str, ...] = ()

    @classmethod
    def of(cls, entries: Iterable[str]) -> BucketAllowList:
        return cls(tuple(e.strip().removeprefix("s3://") for e in entries if e.strip()))

    @property
    def empty(self) -> bool:
        return not self.entries

    def allows(self, bucket: str, key: str) -> bool:
        for entry in self.entries:
            if entry == EVERYTHING:
                return True
            name, _, prefix = entry.partition("/")
            if name == bucket and key.startswith(prefix):
                return True
        return False
