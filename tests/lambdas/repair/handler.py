"""The repair function the tests deploy to ministack: it keeps what it received and fails on request.

Every invocation first writes its event to S3 (``OUT_BUCKET``, key ``calls/NNNNNN.json``,
numbered in invocation order, with the time it started as ``_at``), so a test reads back
exactly what the function received, when and in which order, failed invocations included. Behaviour comes from environment variables:

- ``FAIL_FIRST=N``: raise on the first N invocations (counted across cold starts);
- ``FAIL_ON=TEXT``: raise when any record contains TEXT;
- ``REJECT_ONCE=TEXT``: report each record containing TEXT in ``batchItemFailures`` the
  first time that record is seen;
- ``REJECT_ALWAYS=TEXT``: report records containing TEXT in ``batchItemFailures`` every time;
- ``ANSWER=JSON``: answer this instead (e.g. a malformed ``batchItemFailures``);
- ``CONFIRM_ONE=1``: confirm only the first record of each batch (a checkpoint moving one at a time);
- ``SLEEP=SECONDS``: sleep before answering (after recording the call);
- ``VALIDATE=powertools``: parse the event with Powertools' parser models (Kinesis or
  DynamoDB, by the records' shape) and fail the invocation when it does not validate.

State lives in S3, not in the process: ministack ends a worker whose invocation failed.
"""

import json
import os
import time

import boto3

s3 = boto3.client("s3")


def _sequence(record):
    if "offset" in record:  # Kafka
        return str(record["offset"])
    if "dynamodb" in record:
        return record["dynamodb"]["SequenceNumber"]
    return record["kinesis"]["sequenceNumber"]


def _identifier(record):
    """How a batchItemFailures item names a record: its sequence number; Kafka: partition and offset."""
    if "offset" in record:
        return {"partition": f"{record['topic']}-{record['partition']}", "offset": record["offset"]}
    return _sequence(record)


def _count(bucket, prefix):
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sum(len(page.get("Contents", [])) for page in pages)


def _first_time(bucket, sequence):
    try:
        s3.head_object(Bucket=bucket, Key=f"seen/{sequence}")
    except s3.exceptions.ClientError:
        s3.put_object(Bucket=bucket, Key=f"seen/{sequence}", Body=b"")
        return True
    return False


def _validate(event):
    """Raise unless Powertools' own model accepts the event, as a repair function written with it would."""
    from aws_lambda_powertools.utilities.parser import parse
    from aws_lambda_powertools.utilities.parser.models import (
        DynamoDBStreamModel,
        KafkaMskEventModel,
        KafkaSelfManagedEventModel,
        KinesisDataStreamModel,
    )

    if "records" in event:  # Kafka: the MSK or self-managed event
        model = KafkaMskEventModel if event.get("eventSource") == "aws:kafka" else KafkaSelfManagedEventModel
        parse(event=event, model=model)
        return
    kinesis = any("kinesis" in record for record in event.get("Records", []))
    parse(event=event, model=KinesisDataStreamModel if kinesis else DynamoDBStreamModel)


def handler(event, context):
    bucket = os.environ["OUT_BUCKET"]
    # Kafka events key their records by topic-partition; the streams' are a list.
    records = event.get("Records") or [r for part in (event.get("records") or {}).values() for r in part]
    started = time.time()
    n = _count(bucket, "calls/")
    s3.put_object(
        Bucket=bucket, Key=f"calls/{n:06d}.json", Body=json.dumps({**event, "_at": started}).encode()
    )
    if os.environ.get("VALIDATE") == "powertools":
        _validate(json.loads(json.dumps(event)))  # a copy: Powertools' Kafka model decodes headers in place
    if os.environ.get("SLEEP"):
        time.sleep(float(os.environ["SLEEP"]))
    if n < int(os.environ.get("FAIL_FIRST", "0")):
        raise RuntimeError(f"told to fail invocation {n}")
    text = os.environ.get("FAIL_ON")
    if text and any(text in json.dumps(r) for r in records):
        raise RuntimeError("told to fail on this record")
    if "ANSWER" in os.environ:
        return json.loads(os.environ["ANSWER"])
    if os.environ.get("CONFIRM_ONE") and len(records) > 1:
        return {"batchItemFailures": [{"itemIdentifier": _identifier(records[1])}]}
    failures = []
    once, always = os.environ.get("REJECT_ONCE"), os.environ.get("REJECT_ALWAYS")
    for record in records:
        body = json.dumps(record)
        if (always and always in body) or (once and once in body and _first_time(bucket, _sequence(record))):
            failures.append({"itemIdentifier": _identifier(record)})
    return {"batchItemFailures": failures}
