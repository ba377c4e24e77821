"""`replayer demo`: the whole job against an embedded emulator, offline, no AWS account.

Starts moto's server on a free loopback port, makes a table with a stream, writes
items, builds the invocation record a failed batch would produce, replays it into the
emulator's S3 and prints what was recovered and where.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.syntax import Syntax

from replayer import logs
from replayer.allow import AllowList
from replayer.aws import Clients
from replayer.core import Replayer
from replayer.model import Outcome
from replayer.parse import parse_message
from replayer.report import Report, render
from replayer.sinks import S3Sink

__all__ = ["emulator", "run_demo"]

TABLE = "orders"
BUCKET = "replayer-demo-archive"
REGION = "us-east-1"


@contextmanager
def emulator() -> Iterator[str]:
    """A moto server on a free loopback port, with the AWS environment pointed at it."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise SystemExit("the demo needs the emulator: pip install 'lambda-stream-replayer[demo]'") from exc
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = {k: os.environ.get(k) for k in _ENV}
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="demo",
        AWS_SECRET_ACCESS_KEY="demo",
        AWS_REGION=REGION,
        AWS_DEFAULT_REGION=REGION,
    )
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        os.environ.pop(k, None)
    try:
        yield endpoint
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


_ENV = (
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_PROFILE",
    "AWS_SESSION_TOKEN",
)


def _prepare(console: Console) -> dict[str, Any]:
    """Table, stream, writes; returns the invocation record of a 'failed' batch of 4."""
    import boto3

    ddb = boto3.client("dynamodb")
    streams = boto3.client("dynamodbstreams")
    table = ddb.create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )["TableDescription"]
    stream_arn = table["LatestStreamArn"]
    for i in range(1, 7):
        ddb.put_item(TableName=TABLE, Item={"id": {"S": f"order-{i}"}, "total": {"N": str(i * 10)}})
    ddb.update_item(
        TableName=TABLE,
        Key={"id": {"S": "order-2"}},
        UpdateExpression="SET #s = :s",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":s": {"S": "shipped"}},
    )
    ddb.delete_item(TableName=TABLE, Key={"id": {"S": "order-6"}})
    shard = streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(
        StreamArn=stream_arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
    )
    records = streams.get_records(ShardIterator=iterator["ShardIterator"])["Records"]
    console.print(f"table [bold]{TABLE}[/] has {len(records)} stream records on {shard}")
    failed = records[3:7]  # the batch the consumer "failed" on: records 4..7
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return {
        "requestContext": {
            "requestId": "6f1c2a4e-demo-4b6a-9f0e-1d2c3b4a5968",
            "functionArn": f"arn:aws:lambda:{REGION}:123456789012:function:orders-consumer",
            "condition": "RetryAttemptsExhausted",
            "approximateInvokeCount": 3,
        },
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "version": "1.0",
        "timestamp": now,
        "DDBStreamBatchInfo": {
            "shardId": shard,
            "startSequenceNumber": failed[0]["dynamodb"]["SequenceNumber"],
            "endSequenceNumber": failed[-1]["dynamodb"]["SequenceNumber"],
            "approximateArrivalOfFirstRecord": now,
            "approximateArrivalOfLastRecord": now,
            "batchSize": len(failed),
            "streamArn": stream_arn,
        },
    }


async def _replay(record: dict[str, Any]) -> tuple[Outcome, list[dict[str, Any]]]:
    async with Clients() as clients:
        s3 = await clients.get("s3")
        await s3.create_bucket(Bucket=BUCKET)
        sink = S3Sink(clients, BUCKET, "failed-batches")
        (failure,) = parse_message(json.dumps(record))
        outcome = await Replayer(clients, [sink], allow=AllowList.of([failure.stream_arn])).replay(failure)
        obj = await s3.get_object(Bucket=BUCKET, Key=sink.key(failure, "records.jsonl.gz"))
        body = gzip.decompress(await obj["Body"].read())
        return outcome, [json.loads(line) for line in body.splitlines()]


def run_demo(*, keep: bool = False) -> int:
    console = Console()
    logs.configure("warning")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the emulator's access log
    console.rule("[bold]replayer demo[/]: an embedded AWS emulator, no account needed")
    with emulator() as endpoint:
        console.print(f"emulator listening on {endpoint}")
        record = _prepare(console)
        console.print("the invocation record Lambda sent to its on-failure destination:")
        console.print(Syntax(json.dumps(record, indent=2), "json", word_wrap=True))
        outcome, archived = asyncio.run(_replay(record))
        render(Report([outcome]), output="table", out=console.file, console=console, notes=console)
        console.print(f"recovered {len(archived)} records into {outcome.delivered_to[0]}:")
        for rec in archived:
            image = rec["dynamodb"].get("NewImage") or rec["dynamodb"].get("OldImage")
            console.print(
                f"  {rec['eventName']:<7} seq {rec['dynamodb']['SequenceNumber']}  {json.dumps(image)}"
            )
        if keep:
            console.print(f"emulator still up at {endpoint}; Ctrl-C to stop")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
    return 0 if outcome.kind.value == "replayed" and len(archived) == 4 else 1
