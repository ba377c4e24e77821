"""`file:DIR`: the S3 archive's layout on a local disk."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from pathlib import Path

from replayer.model import Failure
from replayer.readers import ReadResult
from replayer.sinks._base import Delivery, SinkError
from replayer.sinks._layout import (
    INVOCATION,
    LOSS_REPORT,
    RECORDS,
    invocation_document,
    loss_report_document,
    range_path,
    records_object,
)

__all__ = ["FileSink", "write_once"]


def write_once(path: Path, body: bytes) -> bool:
    """Create `path` with `body` unless it exists; True when this call created it.

    The bytes go to a temporary name first and are linked into place, so a reader never
    sees a partly written file and a second writer never replaces the first.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


class FileSink:
    """Same objects as the S3 sink, under a local directory."""

    durable = True

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    @property
    def uri(self) -> str:
        return f"file:{self.root}"

    def path(self, failure: Failure, name: str) -> Path:
        return self.root.joinpath(*range_path(failure).split("/"), name)

    def _deliver(self, failure: Failure, result: ReadResult) -> Delivery:
        records_path = self.path(failure, RECORDS) if result.records else None
        created = write_once(records_path, records_object(result)) if records_path else True
        report = None
        if result.gaps:
            report_path = self.path(failure, LOSS_REPORT)
            write_once(report_path, loss_report_document(failure, result))
            report = str(report_path)
        records_name = str(records_path.relative_to(self.root)) if records_path else None
        write_once(self.path(failure, INVOCATION), invocation_document(failure, result, records_name))
        return Delivery(
            str(records_path or self.path(failure, INVOCATION)), report, already_there=not created
        )

    async def deliver(self, failure: Failure, result: ReadResult) -> Delivery:
        try:
            return await asyncio.to_thread(self._deliver, failure, result)
        except OSError as exc:
            raise SinkError(f"{self.uri}: {exc}") from exc
