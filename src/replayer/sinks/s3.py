"""`s3://bucket/prefix`: an archive that outlives the stream."""

from __future__ import annotations

import asyncio

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from replayer.aws import Clients
from replayer.model import Failure
from replayer.readers import ReadResult
from replayer.readers._wire import error_code
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

__all__ = ["S3Sink"]

log = structlog.get_logger(__name__)


class S3Sink:
    """One gzip JSON Lines object per range, the invocation record and any loss report beside it.

    Every object is written with ``If-None-Match: *``: a second writer (a retry, another
    replica) never overwrites what is there, and finding it there counts as delivered.
    The manifest (``invocation.json``) is written last, so its presence means the range
    is complete in the archive.
    """

    durable = True

    def __init__(self, clients: Clients, bucket: str, prefix: str = "") -> None:
        self._clients = clients
        self.bucket = bucket
        self.prefix = prefix.strip("/")

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def key(self, failure: Failure, name: str) -> str:
        folder = range_path(failure)
        return f"{self.prefix}/{folder}/{name}" if self.prefix else f"{folder}/{name}"

    async def _put_once(self, key: str, body: bytes, content_type: str, encoding: str | None = None) -> bool:
        """Create the object unless it exists; True when this call created it."""
        s3 = await self._clients.get("s3")
        extra = {"ContentEncoding": encoding} if encoding else {}
        try:
            await s3.put_object(
                Bucket=self.bucket, Key=key, Body=body, ContentType=content_type, IfNoneMatch="*", **extra
            )
        except ClientError as exc:
            if error_code(exc) in ("PreconditionFailed", "412"):
                return False
            raise SinkError(f"s3://{self.bucket}/{key}: {error_code(exc) or exc}") from exc
        except BotoCoreError as exc:
            raise SinkError(f"s3://{self.bucket}/{key}: {exc}") from exc
        return True

    async def deliver(self, failure: Failure, result: ReadResult) -> Delivery:
        records_key = self.key(failure, RECORDS) if result.records else None
        created = True
        if records_key is not None:
            # zlib lets go of the GIL: compressing in a thread uses the second core.
            body = await asyncio.to_thread(records_object, result)
            created = await self._put_once(records_key, body, "application/x-ndjson", "gzip")
        report = None
        if result.gaps:
            report_key = self.key(failure, LOSS_REPORT)
            await self._put_once(report_key, loss_report_document(failure, result), "application/json")
            report = f"s3://{self.bucket}/{report_key}"
        await self._put_once(
            self.key(failure, INVOCATION),
            invocation_document(failure, result, records_key),
            "application/json",
        )
        location = f"s3://{self.bucket}/{records_key or self.key(failure, INVOCATION)}"
        return Delivery(location, report, already_there=not created)
