"""`replayer demo`: the whole job against an embedded emulator, offline, no AWS account.

Starts moto's server on a free loopback port, makes a table with a stream, writes
items, builds the invocation record a failed batch would produce, replays it into the
emulator's S3 and prints what was recovered and where.

`replayer demo --serve` makes the world the documentation's examples run in (`build_world`: the
table `orders` with its stream, the bucket `my-archive`, a failure queue holding the failed
batch's invocation record, a quarantine queue, and `failure.json` naming that batch), prints the
`export` lines that point a shell at it, and keeps the emulator up until Ctrl-C.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import os
import shlex
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
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

__all__ = ["FAILURE_RECORD", "World", "build_world", "emulator", "run_demo", "serve_demo"]

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

    return _failed_batch(boto3.client("dynamodb"), boto3.client("dynamodbstreams"), console)


def _failed_batch(ddb: Any, streams: Any, console: Console) -> dict[str, Any]:
    """The table with its stream and writes; the invocation record of a 'failed' batch of 4."""
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


# ---- the documentation's world (`replayer demo --serve`; tests/test_docs.py runs the docs in it)

ARCHIVE_BUCKET = "my-archive"
FAILURE_QUEUE = "stream-failures"
QUARANTINE_QUEUE = "stream-failures-quarantine"
FAILURE_RECORD = "failure.json"
_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "demo", "AWS_SECRET_ACCESS_KEY": "demo", "AWS_REGION": REGION}


@dataclass(frozen=True)
class World:
    """What `build_world` made: where, and the variables the documentation's examples use."""

    endpoint: str
    stream_arn: str
    shard_id: str
    failure_queue: str
    quarantine_queue: str
    record: Path
    start: str
    end: str

    def exports(self) -> dict[str, str]:
        """The environment of a shell whose commands run against this world, in print order."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            **_CREDENTIALS,
            "FAILURE_QUEUE": self.failure_queue,
            "QUARANTINE_QUEUE": self.quarantine_queue,
            "STREAM_ARN": self.stream_arn,
            "SHARD_ID": self.shard_id,
            "START_SEQUENCE": self.start,
            "END_SEQUENCE": self.end,
        }


def build_world(endpoint: str, directory: Path, console: Console | None = None) -> World:
    """The docs' world on the emulator at `endpoint`, and `failure.json` written in `directory`.

    The table `orders` with its stream (8 records on one shard), the bucket `my-archive`, the
    failure queue `stream-failures` (with a dead-letter queue) holding the invocation record of
    the batch the consumer 'failed' on (records 4 to 7), and the queue `stream-failures-quarantine`.
    """
    import boto3

    def client(service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=endpoint,
            region_name=REGION,
            aws_access_key_id="demo",
            aws_secret_access_key="demo",
        )

    record = _failed_batch(client("dynamodb"), client("dynamodbstreams"), console or Console(quiet=True))
    client("s3").create_bucket(Bucket=ARCHIVE_BUCKET)
    sqs = client("sqs")
    dead = sqs.create_queue(QueueName=f"{FAILURE_QUEUE}-dlq")["QueueUrl"]
    dead_arn = sqs.get_queue_attributes(QueueUrl=dead, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    failures = sqs.create_queue(
        QueueName=FAILURE_QUEUE,
        Attributes={"RedrivePolicy": json.dumps({"deadLetterTargetArn": dead_arn, "maxReceiveCount": "10"})},
    )["QueueUrl"]
    quarantine = sqs.create_queue(QueueName=QUARANTINE_QUEUE)["QueueUrl"]
    sqs.send_message(QueueUrl=failures, MessageBody=json.dumps(record))
    path = directory / FAILURE_RECORD
    path.write_text(json.dumps(record, indent=2) + "\n")
    info = record["DDBStreamBatchInfo"]
    return World(
        endpoint,
        info["streamArn"],
        info["shardId"],
        failures,
        quarantine,
        path,
        info["startSequenceNumber"],
        info["endSequenceNumber"],
    )


def serve_demo() -> int:
    """`replayer demo --serve`: the docs' world in the current directory until Ctrl-C (exit 2 if
    a failure.json is already there: it is never overwritten)."""
    here = Path.cwd()
    if (here / FAILURE_RECORD).exists():
        sys.stderr.write(
            f"replayer demo --serve: {here / FAILURE_RECORD} exists; run it in another directory\n"
        )
        return 2
    console = Console(stderr=True)
    logs.configure("warning")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the emulator's access log
    with emulator() as endpoint:
        world = build_world(endpoint, here, console)
        try:
            console.print(
                f"bucket {ARCHIVE_BUCKET}; queue {FAILURE_QUEUE} holds the failed batch's invocation "
                f"record, also written to {FAILURE_RECORD}; quarantine queue {QUARANTINE_QUEUE}"
            )
            console.print("In another shell, in this directory, run these lines, then the docs' examples:")
            lines = [f"export {key}={shlex.quote(value)}" for key, value in world.exports().items()]
            sys.stdout.write("\n".join(lines) + "\n")
            sys.stdout.flush()
            console.print(f"emulator up at {endpoint}; Ctrl-C stops it (and removes {FAILURE_RECORD})")
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            world.record.unlink(missing_ok=True)
    return 0
