"""Re-read a range of a DynamoDB stream shard: GetShardIterator + GetRecords."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import structlog
from botocore.exceptions import ClientError

from replayer.aws import RAW_BODY, Clients, error_code
from replayer.model import Failure
from replayer.readers._base import RangeCollector, ReadResult, shard_lock
from replayer.wire import dumps, gc_paused, jsonable, loads

__all__ = ["DynamoDBReader", "RETENTION"]

log = structlog.get_logger(__name__)

RETENTION = timedelta(hours=24)  # fixed for DynamoDB Streams


class DynamoDBReader:
    """Reads DynamoDB Streams ranges into Lambda-event-shaped records.

    Keyword-only settings: `page_limit` records per GetRecords call (at most 1000),
    `max_empty_pages` consecutive empty pages before giving up (the range is then
    retried, not reported lost), `max_reacquires` iterator re-acquisitions per range.
    """

    def __init__(
        self,
        clients: Clients,
        *,
        page_limit: int = 1000,
        max_empty_pages: int = 50,
        max_reacquires: int = 20,
    ) -> None:
        self._clients = clients
        self._page_limit = page_limit
        self._max_empty_pages = max_empty_pages
        self._max_reacquires = max_reacquires

    async def retention(self, failure: Failure) -> timedelta:
        return RETENTION

    async def read(self, failure: Failure) -> ReadResult:
        async with shard_lock(failure):
            client = await self._clients.get("dynamodbstreams", failure.region)
            return await _RangeRead(self, client, failure).run()


class _RangeRead:
    """The state of reading one range; lives for one `read` call."""

    def __init__(self, reader: DynamoDBReader, client: Any, failure: Failure) -> None:
        self.reader = reader
        self.client = client
        self.failure = failure
        self.books = RangeCollector(failure)
        self.reacquires = 0

    async def _iterator(self) -> str | None:
        """An iterator at the first record not yet read; None when none can be had."""
        after = self.books.resume_after
        kwargs: dict[str, Any] = {"StreamArn": self.failure.stream_arn, "ShardId": self.failure.shard_id}
        if after is None:
            kwargs |= {
                "ShardIteratorType": "AT_SEQUENCE_NUMBER",
                "SequenceNumber": self.failure.start_sequence,
            }
        else:
            kwargs |= {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": after}
        try:
            response = await self.client.get_shard_iterator(**kwargs)
        except ClientError as exc:
            if error_code(exc) != "TrimmedDataAccessException":
                raise
            # The next record we need is past retention: go on from the oldest one left.
            self.books.lost_from_here("trimmed: past the stream's retention")
            kwargs = {k: v for k, v in kwargs.items() if k != "SequenceNumber"}
            kwargs["ShardIteratorType"] = "TRIM_HORIZON"
            response = await self.client.get_shard_iterator(**kwargs)
        iterator: str | None = response.get("ShardIterator")
        return iterator

    def _feed(self, response: dict[str, Any]) -> tuple[str | None, int]:
        """Give one GetRecords page to the books; the next iterator and the page's size."""
        with gc_paused():
            page = _page(response)
            records = page.get("Records") or []
            for record in records:
                if self.books.add(record["dynamodb"]["SequenceNumber"], _event_record(record, self.failure)):
                    break
            iterator: str | None = page.get("NextShardIterator")
            return iterator, len(records)

    async def run(self) -> ReadResult:
        books = self.books
        try:
            iterator = await self._iterator()
        except ClientError as exc:
            if error_code(exc) != "ResourceNotFoundException":
                raise
            books.lost_from_here(f"stream or shard not found: {exc}")
            return books.result()
        empty_pages = 0
        while iterator is not None and not books.done:
            try:
                response = await self.client.get_records(
                    ShardIterator=iterator, Limit=self.reader._page_limit
                )
            except ClientError as exc:
                code = error_code(exc)
                if code not in ("ExpiredIteratorException", "TrimmedDataAccessException"):
                    raise
                self.reacquires += 1
                if self.reacquires > self.reader._max_reacquires:
                    books.notes.append(f"gave up after {self.reacquires - 1} iterator re-acquisitions")
                    return books.result(complete=False)
                if code == "TrimmedDataAccessException":
                    books.lost_from_here("trimmed while reading: past the stream's retention")
                log.info("reacquire_iterator", reason=code, after=books.resume_after)
                iterator = await self._iterator()
                continue
            # The page's dicts die here, before the next await: 32 ranges in flight hold
            # 32 iterators, not 32 decoded pages.
            iterator, count = self._feed(response)
            del response
            if books.done:
                break
            if iterator is None:
                books.shard_ended()
                break
            empty_pages = 0 if count else empty_pages + 1
            if empty_pages >= self.reader._max_empty_pages:
                books.notes.append(
                    f"gave up after {empty_pages} consecutive empty pages before sequence "
                    f"{self.failure.end_sequence}; will retry"
                )
                return books.result(complete=False)
        if iterator is None and not books.done:
            books.shard_ended()
        return books.result()


def _page(response: dict[str, Any]) -> dict[str, Any]:
    """The GetRecords page as the wire carried it (botocore's parse undone if it ran)."""
    raw = response.get(RAW_BODY)
    if raw is not None:
        page: dict[str, Any] = loads(raw)
        return page
    return {**response, "Records": [jsonable(r) for r in response.get("Records", [])]}


def _event_record(record: dict[str, Any], failure: Failure) -> bytes:
    """A GetRecords record as the Lambda event carries it: as given, plus eventSourceARN."""
    dynamodb = record.get("dynamodb")
    if isinstance(dynamodb, dict):
        created = dynamodb.get("ApproximateCreationDateTime")
        if isinstance(created, float) and created.is_integer():
            dynamodb["ApproximateCreationDateTime"] = int(created)
    record["eventSourceARN"] = failure.stream_arn
    return dumps(record)
