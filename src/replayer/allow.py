"""Which streams replayer may read: configuration decides, never the message."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["AllowList"]


@dataclass(frozen=True, slots=True)
class AllowList:
    """Glob patterns on the stream ARN; empty means every stream is allowed."""

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

    def allows(self, stream_arn: str) -> bool:
        return not self.patterns or any(fnmatch.fnmatchcase(stream_arn, p) for p in self.patterns)
