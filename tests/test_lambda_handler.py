"""`replayer.lambda_handler.handler` called in-process with real SQS, SNS and S3 event JSON, against moto over HTTP."""

from __future__ import annotations

import copy
import gc
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote_plus

import pytest
import structlog

from replayer import lambda_handler
from replayer.errors import ConfigError
from replayer.sources.lambda_ import UnsettledError
from tests.support.aws import DynamoTable, client, keys, make_queue, queue_counts, send, unique
from tests.support.events import load_event
from tests.support.faultproxy import FaultProxy, Rule, slow_shard
from tests.support.handler import LambdaContext, emf_lines


@pytest.fixture(autouse=True)
def lambda_env(monkeypatch: pytest.MonkeyPatch, aws_env: str) -> Iterator[None]:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "replayer")  # EMF: the Lambda environment (stdout)
    monkeypatch.setenv("REPLAYER_SAFETY_MARGIN_SECONDS", "5")
    yield
    lambda_handler.reset()
    structlog.reset_defaults()  # the runtime bound it to this test's captured stderr


def sqs_event(endpoint: str, queue_url: str) -> dict[str, Any]:
    """What Lambda's SQS poller would hand the function: real messages, in the sample event's shape."""
    template = load_event("sqs_lambda_event_ddb.json")["Records"][0]
    sqs = client("sqs", endpoint)
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    received = sqs.receive_message(
        QueueUrl=queue_url,
        MaxNumberOfMessages=10,
        VisibilityTimeout=300,
        AttributeNames=["All"],
        WaitTimeSeconds=1,
    )["Messages"]
    records = []
    for message in received:
        record = copy.deepcopy(template)
        record.update(
            messageId=message["MessageId"],
            receiptHandle=message["ReceiptHandle"],
            body=message["Body"],
            md5OfBody=message["MD5OfBody"],
            eventSourceARN=arn,
            awsRegion="us-east-1",
        )
        record["attributes"]["ApproximateReceiveCount"] = message["Attributes"]["ApproximateReceiveCount"]
        records.append(record)
    return {"Records": records}


def test_sqs_event_reports_exactly_the_unsettled_messages(
    table: DynamoTable,
    bucket: str,
    moto_endpoint: str,
    proxy: FaultProxy,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    failing = DynamoTable(moto_endpoint)
    table.put(4)
    failing.put(1)
    records = table.stream_records()
    queue = make_queue(moto_endpoint)
    send(
        moto_endpoint,
        queue,
        table.invocation_record(0, 1, records),
        table.invocation_record(2, 3, records),
        failing.invocation_record(0, 0),
        "definitely not an invocation record",
    )
    proxy.add(Rule(slow_shard(failing.stream_arn), respond=(400, {"__type": "LimitExceededException"})))
    monkeypatch.setenv("REPLAYER_TO", f"s3://{bucket}/archive")
    monkeypatch.setenv("REPLAYER_ALLOW_STREAMS", f"{table.stream_arn},{failing.stream_arn}")
    event = sqs_event(moto_endpoint, queue)
    by_body = {r["body"]: r["messageId"] for r in event["Records"]}

    answer = lambda_handler.handler(event, LambdaContext())

    failed = {f["itemIdentifier"] for f in answer["batchItemFailures"]}
    expected = {m for b, m in by_body.items() if "not an invocation" in b or failing.name in b}
    assert failed == expected and len(expected) == 2
    assert len([k for k in keys(moto_endpoint, bucket, "archive/") if k.endswith("records.jsonl.gz")]) == 2
    # The retried message got a delay: it is not visible again as soon as Lambda gives it back.
    assert proxy.count("ChangeMessageVisibilityBatch") == 2  # settle.batch: one call per message here
    metrics = emf_lines(capsys.readouterr().out)[-1]
    assert metrics["MessagesReceived"] == 4
    assert metrics["MessagesDeleted"] == 2
    assert metrics["MessagesRetried"] == 1
    assert metrics["MessagesLeft"] == 1
    assert metrics["RecordsRecovered"] == 4
    assert metrics["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "replayer"


def test_a_cold_start_runs_its_first_invocation_without_the_cyclic_gc_then_turns_it_back_on(
    table: DynamoTable, bucket: str, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    table.put(2)
    queue = make_queue(moto_endpoint)
    monkeypatch.setenv("REPLAYER_TO", f"s3://{bucket}/archive")
    monkeypatch.setenv("REPLAYER_ALLOW_STREAMS", table.stream_arn)
    collections: list[str] = []  # one per collection: during which invocation
    during = [""]

    def seen(phase: str, info: dict[str, Any]) -> None:
        if phase == "start" and during[0]:
            collections.append(during[0])

    frozen = gc.get_freeze_count()
    gc.callbacks.append(seen)
    try:
        for invocation in ("cold", "warm"):
            send(moto_endpoint, queue, table.invocation_record(0, 1))
            event = sqs_event(moto_endpoint, queue)
            during[0] = invocation
            answer = lambda_handler.handler(event, LambdaContext())
            if invocation == "warm":
                gc.collect()  # the GC is on in a warm invocation: this one is counted
            during[0] = ""
            assert answer == {"batchItemFailures": []}
            assert gc.isenabled()
    finally:
        gc.callbacks.remove(seen)
    assert "cold" not in collections and "warm" in collections
    assert gc.get_freeze_count() > frozen  # what the cold start made is frozen


def test_poison_goes_to_the_quarantine_and_is_not_reported(
    table: DynamoTable, bucket: str, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = DynamoTable(moto_endpoint)
    table.put(1)
    queue = make_queue(moto_endpoint)
    send(
        moto_endpoint,
        queue,
        "{not json",
        other.invocation_record(0, 0, records=[{"dynamodb": {"SequenceNumber": "5" * 21}}]),
        table.invocation_record(0, 0),
    )
    monkeypatch.setenv("REPLAYER_TO", f"s3://{bucket}/archive")
    monkeypatch.setenv("REPLAYER_ALLOW_STREAMS", table.stream_arn)
    monkeypatch.setenv("REPLAYER_QUARANTINE", f"s3://{bucket}/quarantine")
    answer = lambda_handler.handler(sqs_event(moto_endpoint, queue), LambdaContext())
    assert answer == {"batchItemFailures": []}
    kept = keys(moto_endpoint, bucket, "quarantine/")
    assert len(kept) == 2
    reasons = [
        json.loads(client("s3", moto_endpoint).get_object(Bucket=bucket, Key=k)["Body"].read())["reason"]
        for k in kept
    ]
    assert any("not in --allow-stream" in r for r in reasons)


def test_a_stream_that_does_not_exist_is_quarantined_as_no_such_stream(
    table: DynamoTable, bucket: str, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    table.put(2)
    gone = table.invocation_record(0, 1)
    gone["DDBStreamBatchInfo"]["streamArn"] = gone_arn = table.stream_arn.replace(table.name, "gone-table")
    queue = make_queue(moto_endpoint)
    send(moto_endpoint, queue, gone)
    monkeypatch.setenv("REPLAYER_TO", f"s3://{bucket}/archive")
    monkeypatch.setenv("REPLAYER_ALLOW_STREAMS", gone_arn)
    monkeypatch.setenv("REPLAYER_QUARANTINE", f"s3://{bucket}/quarantine")
    answer = lambda_handler.handler(sqs_event(moto_endpoint, queue), LambdaContext())
    assert answer == {"batchItemFailures": []}  # settled: never retried on to the DLQ
    (kept,) = keys(moto_endpoint, bucket, "quarantine/")
    held = json.loads(client("s3", moto_endpoint).get_object(Bucket=bucket, Key=kept)["Body"].read())
    assert held["reason"] == f"no such stream: {gone_arn}"
    assert keys(moto_endpoint, bucket, "archive/") == []  # no loss report


def test_sample_event_naming_streams_not_allowed_reads_nothing(
    table: DynamoTable, bucket: str, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    event = load_event("sqs_lambda_event_ddb.json")
    monkeypatch.setenv("REPLAYER_TO", f"s3://{bucket}")
    monkeypatch.setenv("REPLAYER_ALLOW_STREAMS", table.stream_arn)
    answer = lambda_handler.handler(event, LambdaContext())
    assert [f["itemIdentifier"] for f in answer["batchItemFailures"]] == [
        r["messageId"] for r in event["Records"]
    ]
    assert proxy.count("GetShardIterator") == 0 and proxy.count("GetRecords") == 0


def test_no_new_work_when_time_runs_short(
    table: DynamoTable, bucket: str, moto_endpoint: str, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    table.put(2)
    queue = make_queue(moto_endpoint)
    send(moto_endpoint, queue, table.invocation_record(0, 0), table.invocation_record(1, 1))
    monkeypatch.setenv("REPLAYER_TO", f"s3://{bucket}")
    event = sqs_event(moto_endpoint, queue)
    answer = lambda_handler.handler(event, LambdaContext(remaining_ms=4_000))  # under the 5 s margin
    assert {f["itemIdentifier"] for f in answer["batchItemFailures"]} == {
        r["messageId"] for r in event["Records"]
    }
    assert proxy.count("GetShardIterator") == 0
    assert keys(moto_endpoint, bucket) == []


def test_warm_invocations_reuse_loop_and_clients(
    table: DynamoTable, bucket: str, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    table.put(2)
    queue = make_queue(moto_endpoint)
    monkeypatch.setenv("REPLAYER_TO", f"s3://{bucket}")
    send(moto_endpoint, queue, table.invocation_record(0, 0))
    assert lambda_handler.handler(sqs_event(moto_endpoint, queue), LambdaContext()) == {
        "batchItemFailures": []
    }
    runtime = lambda_handler._runtime
    assert runtime is not None
    clients = dict(runtime.clients._clients)
    send(moto_endpoint, queue, table.invocation_record(1, 1))
    assert lambda_handler.handler(sqs_event(moto_endpoint, queue), LambdaContext()) == {
        "batchItemFailures": []
    }
    assert lambda_handler._runtime is runtime
    assert runtime.clients._clients == clients and clients
    assert len([k for k in keys(moto_endpoint, bucket) if k.endswith("records.jsonl.gz")]) == 2


def test_sns_event(
    table: DynamoTable, bucket: str, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    table.put(2)
    event = load_event("sns_lambda_event_ddb.json")
    event["Records"][0]["Sns"]["Message"] = json.dumps(table.invocation_record(0, 1))
    monkeypatch.setenv("REPLAYER_TO", f"s3://{bucket}")
    assert lambda_handler.handler(event, LambdaContext()) == {"settled": 1}
    assert len([k for k in keys(moto_endpoint, bucket) if k.endswith("records.jsonl.gz")]) == 1


def test_sns_event_not_settled_raises_for_lambdas_retry(
    table: DynamoTable, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    event = load_event("sns_lambda_event_ddb.json")  # names a stream not allowed; no quarantine
    monkeypatch.setenv("REPLAYER_TO", f"s3://{bucket}")
    monkeypatch.setenv("REPLAYER_ALLOW_STREAMS", table.stream_arn)
    with pytest.raises(UnsettledError, match="not in --allow-stream"):
        lambda_handler.handler(event, LambdaContext())


def test_s3_event_notification_for_destination_objects(
    bucket: str, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    failures_bucket = unique("failures")
    s3 = client("s3", moto_endpoint)
    s3.create_bucket(Bucket=failures_bucket)
    event = load_event("s3_event_notification.json")
    body = json.dumps(load_event("s3_destination_ddb.json")).encode()
    for record in event["Records"]:
        record["s3"]["bucket"]["name"] = failures_bucket
        # Keys in S3 events are form-encoded (+ is a space, %2B a plus): store the decoded key.
        s3.put_object(Bucket=failures_bucket, Key=unquote_plus(record["s3"]["object"]["key"]), Body=body)
    monkeypatch.setenv("REPLAYER_TO", f"s3://{bucket}/archive")
    monkeypatch.setenv(
        "REPLAYER_ALLOW_STREAMS", "arn:aws:dynamodb:eu-west-2:123456789012:table/orders/stream/*"
    )
    assert lambda_handler.handler(event, LambdaContext()) == {"settled": 2}
    # Both objects hold the same range: archived once, from the inline payload (no stream read).
    archived = [k for k in keys(moto_endpoint, bucket, "archive/") if k.endswith("records.jsonl.gz")]
    assert len(archived) == 1 and "/orders/" in archived[0]


def test_s3_object_that_is_not_a_record_is_quarantined(
    bucket: str, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3 = client("s3", moto_endpoint)
    event = load_event("s3_event_notification.json")
    event["Records"] = event["Records"][:1]
    event["Records"][0]["s3"]["bucket"]["name"] = bucket
    s3.put_object(
        Bucket=bucket, Key=event["Records"][0]["s3"]["object"]["key"], Body=b'{"some": "thing else"}'
    )
    monkeypatch.setenv("REPLAYER_TO", f"s3://{bucket}/archive")
    with pytest.raises(UnsettledError, match="unknown message"):
        lambda_handler.handler(event, LambdaContext())
    lambda_handler.reset()
    monkeypatch.setenv("REPLAYER_QUARANTINE", f"s3://{bucket}/quarantine")
    assert lambda_handler.handler(event, LambdaContext()) == {"settled": 1}
    assert len(keys(moto_endpoint, bucket, "quarantine/")) == 1


def test_configuration_problems_are_all_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPLAYER_CONCURRENCY", "lots")
    monkeypatch.setenv("REPLAYER_QUARANTINE", "ftp://nowhere")
    with pytest.raises(ConfigError) as caught:
        lambda_handler.handler({"Records": []}, LambdaContext())
    message = str(caught.value)
    assert "3 configuration problems" in message
    assert "REPLAYER_TO" in message and "REPLAYER_CONCURRENCY: 'lots' is not a whole number" in message
    assert "REPLAYER_QUARANTINE" in message


def test_no_stream_allowed_is_a_clear_error_before_any_message_is_touched(
    table: DynamoTable, bucket: str, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    table.put(1)
    queue = make_queue(moto_endpoint)
    send(moto_endpoint, queue, table.invocation_record(0, 0))
    monkeypatch.setenv("REPLAYER_TO", f"s3://{bucket}")
    monkeypatch.setenv("REPLAYER_QUARANTINE", f"s3://{bucket}/quarantine")
    monkeypatch.delenv("REPLAYER_ALLOW_STREAMS")
    event = sqs_event(moto_endpoint, queue)
    for _ in range(2):  # every invocation fails the same way: Lambda keeps the batch on the queue
        with pytest.raises(ConfigError, match=r"^--allow-stream \(or REPLAYER_ALLOW_STREAMS\) is required"):
            lambda_handler.handler(event, LambdaContext())
    assert keys(moto_endpoint, bucket) == []  # nothing quarantined, nothing archived
    assert queue_counts(moto_endpoint, queue) == (0, 1)  # still there (in flight until it times out)


def test_in_lambda_a_configuration_mistake_fails_the_init() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPLAYER_")}
    env |= {"AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001", "REPLAYER_TO": "s3://archive-bucket"}
    code = "import replayer.lambda_handler"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 1
    line = done.stderr.splitlines()[-1]  # what Lambda reports as the init error
    assert line.startswith(
        "replayer.errors.ConfigError: --allow-stream (or REPLAYER_ALLOW_STREAMS) is required"
    )
    env["REPLAYER_ALLOW_STREAMS"] = "*"
    assert subprocess.run([sys.executable, "-c", code], env=env, timeout=60).returncode == 0


def test_a_script_using_the_handler_exits_without_tracebacks(
    table: DynamoTable, bucket: str, moto_endpoint: str
) -> None:
    table.put(1)
    event = load_event("sns_lambda_event_ddb.json")
    event["Records"][0]["Sns"]["Message"] = json.dumps(table.invocation_record(0, 0))
    code = (
        "import json, sys\n"
        "from replayer.lambda_handler import handler\n"
        "print(json.dumps(handler(json.loads(sys.argv[1]), None)))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "AWS_LAMBDA_FUNCTION_NAME"}
    env["REPLAYER_TO"] = f"s3://{bucket}"
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(event)], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == {"settled": 1}
    assert "Traceback" not in done.stderr and "Unclosed" not in done.stderr and "__del__" not in done.stderr


def test_unknown_event_is_an_error(bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPLAYER_TO", f"s3://{bucket}")
    with pytest.raises(ValueError, match="not an SQS, SNS or S3 event"):
        lambda_handler.handler({"detail-type": "Scheduled Event"}, LambdaContext())


def test_importing_the_handler_stays_light() -> None:
    code = (
        "import sys, replayer.lambda_handler as h; assert callable(h.handler); "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'aioboto3', 'aiobotocore', 'botocore', "
        "'boto3', 'aiohttp', 'prometheus_client', 'structlog', 'rich', 'typer'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_queue_depth_untouched_by_the_handler(
    table: DynamoTable, bucket: str, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lambda's poller deletes what the handler settles: the handler itself never deletes."""
    table.put(1)
    queue = make_queue(moto_endpoint)
    send(moto_endpoint, queue, table.invocation_record(0, 0))
    monkeypatch.setenv("REPLAYER_TO", f"s3://{bucket}")
    assert lambda_handler.handler(sqs_event(moto_endpoint, queue), LambdaContext()) == {
        "batchItemFailures": []
    }
    assert queue_counts(moto_endpoint, queue) == (0, 1)
