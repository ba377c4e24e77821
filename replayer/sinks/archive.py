"""The archive sinks: `s3://bucket/prefix` and `file:DIR`, one layout, create-only writes."""

from __future__ import annotations

import os
from pathlib import Path

from replayer.archive.layout import range_path
from replayer.archive.mac import ManifestKey
from replayer.archive.store import FileStore, S3Store, Store, StoreError
from replayer.archive.write import ArchiveConflict, write_range
from replayer.aws import Clients
from replayer.model import Failure
from replayer.readers import ReadResult
from replayer.sinks._base import Delivery, SinkError
from replayer.sinks._identity import Roles, as_delivered

__all__ = ["ArchiveConflict", "ArchiveSink", "FileSink", "S3Sink"]


class ArchiveSink:
    """One gzip JSON Lines object per range, the invocation record and any loss report beside it.

    Every object is created only if absent and anything already there is read back and
    checked (`replayer.archive.write`): a retry or another replica converges on one
    consistent folder; a contradicting one raises ArchiveConflict. The manifest
    (``invocation.json``) is written last, so its presence means the range is complete; with
    `manifest_key` (a KMS HMAC key id) it is signed, and what is read back must be.
    """

    durable = True

    def __init__(
        self, store: Store, clients: Clients | None = None, *, manifest_key: str | None = None
    ) -> None:
        self.store = store
        self.roles = Roles(clients) if clients is not None else None
        self.manifest_key = (
            ManifestKey(clients, manifest_key) if clients is not None and manifest_key else None
        )

    @property
    def uri(self) -> str:
        return self.store.uri

    async def deliver(self, failure: Failure, result: ReadResult) -> Delivery:
        # A page at a time, never the range; as Lambda delivered them (Kinesis: invokeIdentityArn).
        parts = await as_delivered(self.roles, failure, result.records)
        try:
            written = await write_range(
                self.store, failure, parts, result.gaps, result.notes, key=self.manifest_key
            )
        except StoreError as exc:
            raise SinkError(str(exc)) from exc
        return Delivery(
            written.location,
            written.report,
            already_there=written.already_there,
            recovered=written.recovered,
            gaps=written.gaps,
            notes=(f"{self.uri}: already archived; read back, it holds every record read",)
            if written.already_there
            else (),
        )


class S3Sink(ArchiveSink):
    """`s3://bucket/prefix`: an archive that outlives the stream."""

    def __init__(
        self, clients: Clients, bucket: str, prefix: str = "", *, manifest_key: str | None = None
    ) -> None:
        self.s3 = S3Store(clients, bucket, prefix)
        super().__init__(self.s3, clients, manifest_key=manifest_key)

    def key(self, failure: Failure, name: str) -> str:
        """The S3 key of one of the range's objects."""
        return self.s3.key(f"{range_path(failure)}/{name}")


class FileSink(ArchiveSink):
    """`file:DIR`: the S3 archive's layout on a local disk."""

    def __init__(
        self, root: str | os.PathLike[str], clients: Clients | None = None, *, manifest_key: str | None = None
    ) -> None:
        self.files = FileStore(root)
        super().__init__(self.files, clients, manifest_key=manifest_key)

    def path(self, failure: Failure, name: str) -> Path:
        """The path of one of the range's objects."""
        return self.files.path(f"{range_path(failure)}/{name}")
