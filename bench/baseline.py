"""The script people write by hand, as the benchmark's baseline.

One range at a time, synchronous boto3: GetShardIterator(AT_SEQUENCE_NUMBER), GetRecords
pages until past the end, records serialized to JSON Lines, gzip, one PutObject.
No concurrency, botocore's parser, nothing clever: what replayer is measured against.

    python bench/baseline.py RANGES.jsonl s3://bucket/prefix
"""

from __future__ import annotations

import base64
import gzip
import json
import sys
from datetime import datetime
from typing import Any

import boto3


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, set):
        return sorted(value)
    raise TypeError(type(value))


def main(ranges_path: str, target: str) -> int:
    bucket, _, prefix = target.removeprefix("s3://").partition("/")
    streams = boto3.client("dynamodbstreams")
    s3 = boto3.client("s3")
    total = 0
    with open(ranges_path) as f:
        ranges = [json.loads(line) for line in f if line.strip()]
    for record in ranges:
        info = record["DDBStreamBatchInfo"]
        end = int(info["endSequenceNumber"])
        iterator = streams.get_shard_iterator(
            StreamArn=info["streamArn"],
            ShardId=info["shardId"],
            ShardIteratorType="AT_SEQUENCE_NUMBER",
            SequenceNumber=info["startSequenceNumber"],
        )["ShardIterator"]
        lines = []
        done = False
        while iterator and not done:
            page = streams.get_records(ShardIterator=iterator, Limit=1000)
            for r in page["Records"]:
                if int(r["dynamodb"]["SequenceNumber"]) > end:
                    done = True
                    break
                r["eventSourceARN"] = info["streamArn"]
                lines.append(json.dumps(r, default=_default))
                done = int(r["dynamodb"]["SequenceNumber"]) == end
            iterator = page.get("NextShardIterator")
        key = f"{prefix}/{info['shardId']}/{info['startSequenceNumber']}-{info['endSequenceNumber']}.jsonl.gz"
        s3.put_object(Bucket=bucket, Key=key, Body=gzip.compress("\n".join(lines).encode()))
        total += len(lines)
    print(total)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
