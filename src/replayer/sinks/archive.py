"""The archive sinks: `s3://bucket/prefix` and `file:DIR`, one layout, create-only writes."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from replayer.aws import Clients
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
from replayer.store import FileStore, S3Store, Store, StoreError

__all__ = ["ArchiveSink", "FileSink", "S3Sink"]


class ArchiveSink:
    """One gzip JSON Lines object per range, the invocation record and any loss report beside it.

    Every object is created only if absent: a second writer (a retry, another replica)
    never overwrites what is there, and finding it there counts as delivered. The
    manifest (``invocation.json``) is written last, so its presence means the range is
    complete in the archive.
    """

    durable = True

    def __init__(self, store: Store) -> None:
        self.store = store

    @property
    def uri(self) -> str:
        return self.store.uri

    async def deliver(self, failure: Failure, result: ReadResult) -> Delivery:
        folder = range_path(failure)
        records_key = f"{folder}/{RECORDS}" if result.records else None
        manifest_key = f"{folder}/{INVOCATION}"
        try:
            created = True
            if records_key is not None:
                # zlib lets go of the GIL: compressing in a thread uses the second core.
                body = await asyncio.to_thread(records_object, result)
                created = await self.store.create(
                    records_key, body, content_type="application/x-ndjson", encoding="gzip"
                )
            report = None
            if result.gaps:
                report_key = f"{folder}/{LOSS_REPORT}"
                await self.store.create(report_key, loss_report_document(failure, result))
                report = self.store.location(report_key)
            manifest = invocation_document(failure, result, records_key and self.store.location(records_key))
            await self.store.create(manifest_key, manifest)
        except StoreError as exc:
            raise SinkError(str(exc)) from exc
        return Delivery(self.store.location(records_key or manifest_key), report, already_there=not created)


class S3Sink(ArchiveSink):
    """`s3://bucket/prefix`: an archive that outlives the stream."""

    def __init__(self, clients: Clients, bucket: str, prefix: str = "") -> None:
        self.s3 = S3Store(clients, bucket, prefix)
        super().__init__(self.s3)

    def key(self, failure: Failure, name: str) -> str:
        """The S3 key of one of the range's objects."""
        return self.s3.key(f"{range_path(failure)}/{name}")


class FileSink(ArchiveSink):
    """`file:DIR`: the S3 archive's layout on a local disk."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.files = FileStore(root)
        super().__init__(self.files)

    def path(self, failure: Failure, name: str) -> Path:
        """The path of one of the range's objects."""
        return self.files.path(f"{range_path(failure)}/{name}")
