"""Re-read a range of a DynamoDB stream shard: GetShardIterator + GetRecords."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from botocore.exceptions import ClientError

from replayer import logs
from replayer.aws import Clients, error_code
from replayer.model import Failure
from replayer.readers._base import (
    DEFAULT_MAX_RECORDS_PER_RANGE,
    BaseShardCalls,
    Page,
    ShardReader,
    decoded_page,
)
from replayer.wire import dumps

__all__ = ["DynamoDBReader", "RETENTION"]

log = logs.get_logger(__name__)

RETENTION = timedelta(hours=24)  # fixed for DynamoDB Streams


class DynamoDBReader(ShardReader):
    """Reads DynamoDB Streams ranges into Lambda-event-shaped records.

    Keyword-only settings: `page_limit` records per GetRecords call (at most 1000),
    `max_empty_pages` consecutive empty pages before giving up (the range is then
    retried, not reported lost), `max_reacquires` iterator re-acquisitions per range,
    `ceiling(failure)` the most records a range may hold (more: it is refused).
    """

    def __init__(
        self,
        clients: Clients,
        *,
        page_limit: int = 1000,
        max_empty_pages: int = 50,
        max_reacquires: int = 20,
        ceiling: Callable[[Failure], int] = lambda failure: DEFAULT_MAX_RECORDS_PER_RANGE,
    ) -> None:
        self.service = "dynamodbstreams"
        self._clients = clients
        self.page_limit = page_limit
        self.max_empty_pages = max_empty_pages
        self.max_reacquires = max_reacquires
        self.ceiling = ceiling

    async def retention(self, failure: Failure) -> timedelta:
        return RETENTION

    def calls(self, client: Any, failure: Failure) -> _ShardCalls:
        return _ShardCalls(self, client, failure)


class _ShardCalls(BaseShardCalls):
    """DynamoDB Streams' quirks of reading one range (`ShardCalls`); lives for one `read` call."""

    def __init__(self, reader: DynamoDBReader, client: Any, failure: Failure) -> None:
        super().__init__(client, failure, reader.ceiling(failure), reader.page_limit)
        self.reader = reader

    async def iterator(self) -> str | None:
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
            code = error_code(exc)
            if code == "ResourceNotFoundException":
                await self.not_found(exc)
                return None
            if code != "TrimmedDataAccessException":
                raise
            # The next record we need is past retention: go on from the oldest one left.
            self.books.lost_from_here("trimmed: past the stream's retention")
            kwargs = {k: v for k, v in kwargs.items() if k != "SequenceNumber"}
            kwargs["ShardIteratorType"] = "TRIM_HORIZON"
            response = await self.client.get_shard_iterator(**kwargs)
        iterator: str | None = response.get("ShardIterator")
        return iterator

    async def describe_stream(self) -> None:
        await self.client.describe_stream(StreamArn=self.failure.stream_arn, Limit=1)

    async def fetch(self, iterator: str) -> Any | None:
        try:
            response = await self.get_records(
                lambda limit: self.client.get_records(ShardIterator=iterator, Limit=limit)
            )
        except ClientError as exc:
            code = error_code(exc)
            if code not in ("ExpiredIteratorException", "TrimmedDataAccessException"):
                raise
            if code == "TrimmedDataAccessException":
                self.books.lost_from_here("trimmed while reading: past the stream's retention")
            return None
        return response

    def page(self, response: Any) -> Page:
        page = decoded_page(response)
        records = page.get("Records") or []
        last = records[-1].get("dynamodb", {}).get("SequenceNumber") if records else None
        return Page(records, page.get("NextShardIterator"), last_sequence=last)

    def feed(self, page: Page) -> int:
        records = page.records
        self.books.add_page(records, [r["dynamodb"]["SequenceNumber"] for r in records], self._events)
        return len(records)

    def _events(self, records: Sequence[dict[str, Any]]) -> list[bytes]:
        """GetRecords records as the Lambda event carries them: as given, plus eventSourceARN."""
        arn = self.failure.stream_arn
        for record in records:
            dynamodb = record.get("dynamodb")
            if isinstance(dynamodb, dict):
                created = dynamodb.get("ApproximateCreationDateTime")
                if isinstance(created, float) and created.is_integer():
                    dynamodb["ApproximateCreationDateTime"] = int(created)
            record["eventSourceARN"] = arn
        return list(map(dumps, records))
