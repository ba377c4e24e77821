"""The emulators' AWS, prepared and checked with plain boto3 clients (never replayer's own).

Names are unique per test (uuid), so tests never see each other's tables, streams, queues or buckets.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import boto3

REGION = "us-east-1"


def client(service: str, endpoint: str) -> Any:
    """A plain boto3 client for preparing and checking state (not replayer's own)."""
    return boto3.client(service, endpoint_url=endpoint, region_name=REGION)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def batch_info(shard_id: str, first: str, last: str, count: int, stream_arn: str, now: str) -> dict[str, Any]:
    """The batch info of an invocation record: which sequence range of which shard failed."""
    return {
        "shardId": shard_id,
        "startSequenceNumber": first,
        "endSequenceNumber": last,
        "approximateArrivalOfFirstRecord": now,
        "approximateArrivalOfLastRecord": now,
        "batchSize": count,
        "streamArn": stream_arn,
    }


def esm_record(info_key: str, info: dict[str, Any], now: str) -> dict[str, Any]:
    """The invocation record a Lambda event source mapping sends when it gives up on a batch."""
    return {
        "requestContext": {
            "requestId": str(uuid.uuid4()),
            "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:consumer",
            "condition": "RetryAttemptsExhausted",
            "approximateInvokeCount": 3,
        },
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "version": "1.0",
        "timestamp": now,
        info_key: info,
    }


def create_stream_table(ddb: Any, name: str) -> dict[str, Any]:
    """Create table `name` (key pk) with a NEW_AND_OLD_IMAGES stream through `ddb`; its TableDescription."""
    description: dict[str, Any] = ddb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )["TableDescription"]
    return description


class DynamoTable:
    """A table with a NEW_AND_OLD_IMAGES stream in the emulator, and its stream records."""

    def __init__(self, endpoint: str, name: str | None = None) -> None:
        self.endpoint = endpoint
        self.ddb = client("dynamodb", endpoint)
        self.streams = client("dynamodbstreams", endpoint)
        self.name = name or unique("table")
        desc = create_stream_table(self.ddb, self.name)
        self.stream_arn: str = desc["LatestStreamArn"]
        shards = self.streams.describe_stream(StreamArn=self.stream_arn)["StreamDescription"]["Shards"]
        self.shard_id: str = shards[0]["ShardId"]

    def put(self, n: int, *, start: int = 0, payload: str = "x") -> None:
        for i in range(start, start + n):
            self.ddb.put_item(
                TableName=self.name,
                Item={
                    "pk": {"S": f"item-{i}"},
                    "n": {"N": str(i)},
                    "blob": {"B": f"bin-{i}".encode()},
                    "tags": {"SS": ["a", "b"]},
                    "payload": {"S": payload},
                },
            )

    def stream_records(self) -> list[dict[str, Any]]:
        """Every record of the shard as the raw GetRecords JSON shape (via botocore, re-encoded)."""
        it = self.streams.get_shard_iterator(
            StreamArn=self.stream_arn, ShardId=self.shard_id, ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        out: list[dict[str, Any]] = []
        while True:
            page = self.streams.get_records(ShardIterator=it, Limit=1000)
            out += page["Records"]
            if not page["Records"]:
                return out
            it = page["NextShardIterator"]

    def invocation_record(
        self, first: int, last: int, records: list[dict[str, Any]] | None = None, **overrides: Any
    ) -> dict[str, Any]:
        """The record a Lambda ESM would send after failing on stream records first..last (0-based)."""
        records = records if records is not None else self.stream_records()
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        info = batch_info(
            self.shard_id,
            records[first]["dynamodb"]["SequenceNumber"],
            records[last]["dynamodb"]["SequenceNumber"],
            last - first + 1,
            self.stream_arn,
            now,
        )
        info.update(overrides)
        return esm_record("DDBStreamBatchInfo", info, now)


class KinesisStream:
    """A Kinesis stream in an emulator (moto or kinesis-local): what was put, and its records."""

    def __init__(self, endpoint: str, name: str | None = None, shards: int = 1) -> None:
        self.endpoint = endpoint
        self.kinesis = client("kinesis", endpoint)
        self.name = name or unique("stream")
        self.kinesis.create_stream(StreamName=self.name, ShardCount=shards)
        self._wait_active()
        summary = self.kinesis.describe_stream_summary(StreamName=self.name)["StreamDescriptionSummary"]
        self.stream_arn: str = summary["StreamARN"]
        self.shard_id: str = self.shard_ids()[0]
        self.puts: list[dict[str, Any]] = []  # what `put` wrote: Data, PartitionKey, SequenceNumber, ShardId

    def _wait_active(self) -> None:
        waiter = self.kinesis.get_waiter("stream_exists")
        waiter.wait(StreamName=self.name, WaiterConfig={"Delay": 0.1, "MaxAttempts": 600})

    def shard_ids(self) -> list[str]:
        return [s["ShardId"] for s in self.kinesis.list_shards(StreamARN=self.stream_arn)["Shards"]]

    def put(self, n: int, *, start: int = 0, shard_id: str | None = None) -> list[dict[str, Any]]:
        """Put n records one by one (binary data, to exercise base64); all on one shard."""
        put = []
        for i in range(start, start + n):
            data = f"record-{i}-".encode() + bytes([0, 255, i % 256])
            answer = self.kinesis.put_record(
                StreamARN=self.stream_arn,
                Data=data,
                PartitionKey=f"pk-{i}",
                ExplicitHashKey="0",  # the lowest hash key: the first shard (or its first child)
            )
            put.append({"Data": data, "PartitionKey": f"pk-{i}", **answer})
        if shard_id is not None:
            assert all(p["ShardId"] == shard_id for p in put)
        self.puts += put
        return put

    def stream_records(self, shard_id: str | None = None) -> list[dict[str, Any]]:
        """Every record of the shard, as boto3 parses GetRecords."""
        it = self.kinesis.get_shard_iterator(
            StreamARN=self.stream_arn, ShardId=shard_id or self.shard_id, ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        out: list[dict[str, Any]] = []
        while it:
            page = self.kinesis.get_records(StreamARN=self.stream_arn, ShardIterator=it, Limit=10_000)
            out += page["Records"]
            if not page["Records"] and not page.get("MillisBehindLatest"):
                break
            it = page.get("NextShardIterator")
        return out

    def split(self, shard_id: str | None = None) -> list[str]:
        """Split a shard in two halves of its hash range; the ids of its children."""
        parent = shard_id or self.shard_id
        before = set(self.shard_ids())
        self.kinesis.split_shard(
            StreamARN=self.stream_arn, ShardToSplit=parent, NewStartingHashKey=str(2**127)
        )
        self._wait_active()
        return sorted(set(self.shard_ids()) - before)

    def invocation_record(
        self,
        first: int,
        last: int,
        records: list[dict[str, Any]] | None = None,
        *,
        shard_id: str | None = None,
        pipes: bool = False,
        **overrides: Any,
    ) -> dict[str, Any]:
        """What a Lambda ESM (or, with `pipes`, a pipe's DLQ) sends after failing on records first..last."""
        shard = shard_id or self.shard_id
        records = records if records is not None else self.stream_records(shard)
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        info = batch_info(
            shard,
            records[first]["SequenceNumber"],
            records[last]["SequenceNumber"],
            last - first + 1,
            self.stream_arn,
            now,
        )
        info.update(overrides)
        if pipes:
            return {
                "context": {
                    "partnerResourceArn": "arn:aws:pipes:us-east-1:123456789012:pipe/repair-pipe",
                    "condition": "RetryAttemptsExhausted",
                },
                "version": "1.0",
                "timestamp": now,
                "KinesisBatchInfo": info,
            }
        return esm_record("KinesisBatchInfo", info, now)


# ---- SQS and S3


def make_queue(endpoint: str, *, visibility: int = 30) -> str:
    sqs = client("sqs", endpoint)
    url: str = sqs.create_queue(
        QueueName=unique("failures"), Attributes={"VisibilityTimeout": str(visibility)}
    )["QueueUrl"]
    return url


def send(endpoint: str, queue_url: str, *bodies: Any) -> None:
    sqs = client("sqs", endpoint)
    for body in bodies:
        sqs.send_message(QueueUrl=queue_url, MessageBody=body if isinstance(body, str) else json.dumps(body))


def queue_counts(endpoint: str, queue_url: str) -> tuple[int, int]:
    """(visible, not visible) messages."""
    attrs = client("sqs", endpoint).get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]), int(attrs["ApproximateNumberOfMessagesNotVisible"])


def keys(endpoint: str, bucket: str, prefix: str = "") -> list[str]:
    s3 = client("s3", endpoint)
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def json_objects(endpoint: str, bucket: str, prefix: str = "") -> dict[str, Any]:
    """Every object under the prefix, parsed as JSON, by key (in key order)."""
    s3 = client("s3", endpoint)
    return {
        k: json.loads(s3.get_object(Bucket=bucket, Key=k)["Body"].read())
        for k in keys(endpoint, bucket, prefix)
    }
