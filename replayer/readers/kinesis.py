"""Re-read a range of a Kinesis Data Streams shard: GetShardIterator + GetRecords.

Records come out in the shape of Lambda's Kinesis event (`data` base64 as stored,
so KPL-aggregated records stay aggregated, as Lambda passes them on).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from datetime import timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

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

__all__ = ["DEFAULT_RETENTION", "GET_RECORDS_BUDGET", "KinesisReader", "ShardBudget"]

log = logs.get_logger(__name__)

# The minimum a Kinesis stream keeps records; assumed only when DescribeStreamSummary fails.
DEFAULT_RETENTION = timedelta(hours=24)
MAX_PAGE = 10_000  # GetRecords' own ceiling
MAX_RECORD_BYTES = 10 * 1024 * 1024  # a record's data at most (10 MiB, where a stream opts in; 1 MiB else)
MAX_DATA_BASE64 = 4 * -(-MAX_RECORD_BYTES // 3)  # as GetRecords carries it


class ShardBudget:
    """At most `rate` calls in any `per` seconds for each key (a sliding window).

    `acquire` reserves the next free slot without awaiting first, so it needs no lock
    bound to an event loop, and callers are served in the order they asked.
    """

    def __init__(
        self,
        rate: int = 5,
        per: float = 1.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate < 1 or per <= 0:
            raise ValueError("rate must be at least 1 and per above 0")
        self.rate = rate
        self.per = per
        self._clock = clock
        self._sleep = sleep
        self._slots: dict[Hashable, deque[float]] = {}
        self._guard = threading.Lock()

    def _reserve(self, key: Hashable) -> tuple[float, float]:
        with self._guard:
            now = self._clock()
            if len(self._slots) > 4096:  # forget keys whose window has passed
                self._slots = {k: s for k, s in self._slots.items() if s[-1] > now - self.per}
            slots = self._slots.setdefault(key, deque(maxlen=self.rate))
            at = now if len(slots) < self.rate else max(now, slots[0] + self.per)
            slots.append(at)
            return now, at

    async def acquire(self, key: Hashable) -> None:
        """Wait for `key`'s next slot in the budget."""
        now, at = self._reserve(key)
        if at > now:
            await self._sleep(at - now)


# Kinesis allows 5 GetRecords a second per shard: one budget for the whole process.
GET_RECORDS_BUDGET = ShardBudget(rate=5, per=1.0)

_RETENTION_MAX = 4096  # streams remembered; the oldest is forgotten (asked again if it comes back)
_retention: dict[str, timedelta] = {}  # stream ARN -> RetentionPeriodHours, for the process


class KinesisReader(ShardReader):
    """Reads Kinesis ranges into Lambda-event-shaped records.

    Keyword-only settings: `page_limit` records per GetRecords call (at most 10,000),
    `max_empty_pages` consecutive empty pages behind the tip before giving up (the range
    is then retried, not reported lost), `max_reacquires` iterator re-acquisitions per
    range, `invoke_identity_arn` for the events' `invokeIdentityArn` (left out when
    None), `budget` the GetRecords rate limit (default: the process-wide one), `ceiling(failure)`
    the most records a range may hold (more: it is refused).
    """

    def __init__(
        self,
        clients: Clients,
        *,
        page_limit: int = MAX_PAGE,
        max_empty_pages: int = 50,
        max_reacquires: int = 20,
        invoke_identity_arn: str | None = None,
        budget: ShardBudget | None = None,
        ceiling: Callable[[Failure], int] = lambda failure: DEFAULT_MAX_RECORDS_PER_RANGE,
    ) -> None:
        if not 1 <= page_limit <= MAX_PAGE:
            raise ValueError(f"page_limit must be 1..{MAX_PAGE}")
        self.service = "kinesis"
        self._clients = clients
        self.page_limit = page_limit
        self.max_empty_pages = max_empty_pages
        self.max_reacquires = max_reacquires
        self.invoke_identity_arn = invoke_identity_arn
        self.budget = budget or GET_RECORDS_BUDGET
        self.ceiling = ceiling

    async def retention(self, failure: Failure) -> timedelta:
        """The stream's RetentionPeriodHours (DescribeStreamSummary), asked once per stream."""
        cached = _retention.get(failure.stream_arn)
        if cached is not None:
            return cached
        client = await self._clients.get("kinesis", failure.region, failure.arn.account)
        try:
            response = await client.describe_stream_summary(StreamARN=failure.stream_arn)
            hours = int(response["StreamDescriptionSummary"]["RetentionPeriodHours"])
        except (ClientError, BotoCoreError, KeyError, TypeError, ValueError) as exc:
            log.warning("retention_unknown", stream_arn=failure.stream_arn, error=str(exc), assumed_hours=24)
            return DEFAULT_RETENTION  # the shortest there is: never a deadline too late
        if len(_retention) >= _RETENTION_MAX:
            del _retention[next(iter(_retention))]
        _retention[failure.stream_arn] = timedelta(hours=hours)
        return _retention[failure.stream_arn]

    def calls(self, client: Any, failure: Failure) -> _ShardCalls:
        return _ShardCalls(self, client, failure)


class _ShardCalls(BaseShardCalls):
    """Kinesis' quirks of reading one range (`ShardCalls`); lives for one `read` call."""

    def __init__(self, reader: KinesisReader, client: Any, failure: Failure) -> None:
        super().__init__(client, failure, reader.ceiling(failure), reader.page_limit)
        self.reader = reader
        self.region = failure.region

    async def iterator(self) -> str | None:
        after = self.books.resume_after
        kwargs: dict[str, Any] = {"StreamARN": self.failure.stream_arn, "ShardId": self.failure.shard_id}
        if after is None:
            # On trimmed data this lands on the oldest record left: the collector sees
            # a first record past the start and reports the gap before it.
            kwargs |= {
                "ShardIteratorType": "AT_SEQUENCE_NUMBER",
                "StartingSequenceNumber": self.failure.start_sequence,
            }
        else:
            # AT (not AFTER) the last record taken: Kinesis sequence numbers have holes, so only
            # seeing that very record again proves nothing was trimmed in between.
            kwargs |= {"ShardIteratorType": "AT_SEQUENCE_NUMBER", "StartingSequenceNumber": after}
            self.books.expect_again(after)
        try:
            response = await self.client.get_shard_iterator(**kwargs)
        except ClientError as exc:
            if error_code(exc) != "ResourceNotFoundException":
                raise
            await self.not_found(exc)
            return None
        iterator: str | None = response.get("ShardIterator")
        return iterator

    async def describe_stream(self) -> None:
        await self.client.describe_stream_summary(StreamARN=self.failure.stream_arn)

    async def fetch(self, iterator: str) -> Any | None:
        """One GetRecords answer, within the shard's budget."""

        async def get_records(limit: int) -> Any:
            await self.reader.budget.acquire((self.failure.stream_arn, self.failure.shard_id))
            return await self.client.get_records(
                ShardIterator=iterator, Limit=limit, StreamARN=self.failure.stream_arn
            )

        try:
            response = await self.get_records(get_records)
        except ClientError as exc:
            code = error_code(exc)
            if code == "ExpiredIteratorException":
                return None
            if code != "ResourceNotFoundException":
                raise
            await self.not_found(exc)  # deleted while being read
            return {}  # an empty page with no next iterator
        return response

    def page(self, response: Any) -> Page:
        page = decoded_page(response)
        children = page.get("ChildShards") or ()
        records = page.get("Records") or []
        return Page(
            records,
            page.get("NextShardIterator"),
            at_tip=page.get("MillisBehindLatest") == 0,
            child_shards=tuple(str(c.get("ShardId")) for c in children if isinstance(c, dict)),
            last_sequence=records[-1].get("SequenceNumber") if records else None,
        )

    def feed(self, page: Page) -> int:
        records = page.records
        if records and (largest := max(len(r.get("Data") or "") for r in records)) > MAX_DATA_BASE64:
            self.books.too_large(
                f"a record of shard {self.failure.shard_id} holds {largest} characters of base64 data, "
                f"more than a Kinesis record's {MAX_RECORD_BYTES} bytes"
            )
            return len(records)
        self.books.add_page(records, [r["SequenceNumber"] for r in records], self._events)
        return len(records)

    def _events(self, records: Sequence[dict[str, Any]]) -> list[bytes]:
        failure, region, identity = self.failure, self.region, self.reader.invoke_identity_arn
        return [_event_record(r, failure, region, identity) for r in records]


def _event_record(record: dict[str, Any], failure: Failure, region: str, identity_arn: str | None) -> bytes:
    """A GetRecords record as Lambda's Kinesis event carries it (field order as Lambda's)."""
    sequence_number = record["SequenceNumber"]
    event: dict[str, Any] = {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": record["PartitionKey"],
            "sequenceNumber": sequence_number,
            "data": record["Data"],
            "approximateArrivalTimestamp": round(float(record["ApproximateArrivalTimestamp"]), 3),
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"{failure.shard_id}:{sequence_number}",
        "eventName": "aws:kinesis:record",
    }
    if identity_arn:
        event["invokeIdentityArn"] = identity_arn
    event["awsRegion"] = region
    event["eventSourceARN"] = failure.stream_arn
    return dumps(event)
