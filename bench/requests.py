"""Client CPU per AWS request, per operation, through replayer's own clients (`replayer.aws.Clients`).

    .venv/bin/python -m bench.requests [--calls 300]

Starts bench/endpoint.py (no latency proxy: only CPU is measured here), then makes the calls
replayer makes, one at a time, and reports CPU microseconds per call of this process: the
SDK's request path (parameter validation, endpoint resolution, signing, hooks, checksums,
aiohttp) plus the endpoint's answer being parsed. Answers are tiny (a one-record page, an
empty receive), so what is left is per-request overhead, not per-record work.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import orjson

from bench import endpoint as canned

# botocore's defaults for what replayer.aws sets to cut per-request CPU: the "before" column.
SHIPPED = {
    "user_agent": None,
    "request_checksum_calculation": "when_supported",
    "response_checksum_validation": "when_supported",
}


async def measure(endpoint: str, calls: int, rounds: int = 3) -> dict[str, dict[str, float]]:
    """µs of CPU per call, per operation, per variant (botocore as shipped, replayer's settings)."""
    from botocore.config import Config

    from replayer.aws import Clients, SqsQueue

    made = orjson.loads(
        urllib.request.urlopen(
            f"{endpoint}/_bench/streams",
            data=orjson.dumps(
                {"kind": "dynamodb", "name": "requests", "ranges": 1, "records": 10, "shards": 1}
            ),
        ).read()
    )["ranges"][0]["DDBStreamBatchInfo"]
    queue_url = orjson.loads(
        urllib.request.urlopen(
            f"{endpoint}/_bench/fill", data=orjson.dumps({"queue": "requests", "bodies": []})
        ).read()
    )["queue_url"]
    keys = itertools.count(time.time_ns())
    body = b"x" * 20_000
    variants: dict[str, dict[str, Callable[[], Awaitable[Any]]]] = {}
    async with Clients() as shipped, Clients() as ours:
        shipped._config = shipped._config.merge(Config(**SHIPPED))  # the defaults, for comparison only
        for name, clients in (("botocore defaults", shipped), ("replayer.aws", ours)):
            streams = await clients.get("dynamodbstreams")
            s3 = await clients.get("s3")
            queue = await SqsQueue.open(clients, queue_url)
            iterator = (
                await streams.get_shard_iterator(
                    StreamArn=made["streamArn"], ShardId=made["shardId"], ShardIteratorType="TRIM_HORIZON"
                )
            )["ShardIterator"]
            variants[name] = {
                "dynamodbstreams GetShardIterator": partial(
                    streams.get_shard_iterator,
                    StreamArn=made["streamArn"],
                    ShardId=made["shardId"],
                    ShardIteratorType="AT_SEQUENCE_NUMBER",
                    SequenceNumber=made["startSequenceNumber"],
                ),
                "dynamodbstreams GetRecords (1 record)": partial(
                    streams.get_records, ShardIterator=iterator, Limit=1
                ),
                "s3 PutObject (20 KB, If-None-Match)": lambda s3=s3: s3.put_object(
                    Bucket="bench",
                    Key=f"requests/{next(keys)}",
                    Body=body,
                    IfNoneMatch="*",
                    ContentType="application/json",
                ),
                "sqs ReceiveMessage (empty)": partial(
                    queue.receive, at_most=10, wait_seconds=0, visibility_timeout=30
                ),
                "sqs GetQueueAttributes": queue.visible,
            }
        out: dict[str, dict[str, list[float]]] = {}
        for ops in variants.values():  # warm: models loaded, connections open, caches filled
            for make in ops.values():
                for _ in range(20):
                    await make()
        for _ in range(rounds):  # interleaved, so both variants see the same machine
            for name, ops in variants.items():
                for op, make in ops.items():
                    t0 = time.process_time()
                    for _ in range(calls):
                        await make()
                    us = (time.process_time() - t0) / calls * 1e6
                    out.setdefault(op, {}).setdefault(name, []).append(us)
    return {op: {name: statistics.median(v) for name, v in by.items()} for op, by in out.items()}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    server = canned.start(None)
    try:
        import os

        os.environ.update(
            AWS_ENDPOINT_URL=server.endpoint,
            AWS_ACCESS_KEY_ID="bench",
            AWS_SECRET_ACCESS_KEY="bench",
            AWS_REGION="us-east-1",
        )
        figures = asyncio.run(measure(server.endpoint, args.calls))
    finally:
        server.close()
    print("| operation | client CPU µs per call, botocore defaults | replayer.aws | change |")
    print("| --- | ---: | ---: | ---: |")
    for op, by in figures.items():
        before, after = by["botocore defaults"], by["replayer.aws"]
        print(f"| {op} | {before:.0f} | {after:.0f} | {(after - before) / before:+.0%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
