"""Record contents, credentials and signed requests never reach the logs.

A full run (`replayer drain`, through a proxy injecting faults so
the error paths log too; and the Lambda handler) replays ranges whose records carry a
distinctive value, with a distinctive secret key and session token in its environment.
Its stderr (JSON lines) at the default level and at info must hold none of them, nor
anything of a signed request. (Debug adds no line: replayer logs nothing at debug, and
botocore's loggers stay at WARNING whatever the level, for that very reason.)

Figures for docs/reliability.md go to `.cache/reliability/log-secrets.json` (printed with -s).
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import pytest
import structlog
from typer.testing import CliRunner

from replayer import lambda_handler
from replayer.cli import app
from replayer.wire import jsonable
from tests.support.aws import DynamoTable, KinesisStream, client, make_queue, queue_counts, send
from tests.support.faultproxy import Chaos, FaultProxy, Rule, record_proof, service_error
from tests.support.handler import LambdaContext

SECRET_KEY = f"wJalrXUtnFEMI/K7MDENG/{uuid.uuid4().hex}"
SESSION_TOKEN = f"IQoJb3JpZ2luX2VjE{uuid.uuid4().hex}{uuid.uuid4().hex}"
ERROR_KINDS = ["http500", "http503", "throttle", "reset", "reset_after", "cut"]


class Secrets:
    """Streams whose records carry distinctive values, and messages naming them."""

    def __init__(self, endpoint: str) -> None:
        self.value = f"card-4111-{uuid.uuid4().hex}"  # an attribute value written to the table
        self.data = f"kinesis-secret-{uuid.uuid4().hex}".encode()
        self.table = DynamoTable(endpoint)
        self.table.put(4, payload=self.value)
        self.stream = KinesisStream(endpoint)
        self.stream.kinesis.put_record(StreamARN=self.stream.stream_arn, Data=self.data, PartitionKey="p")
        self.stream.kinesis.put_record(StreamARN=self.stream.stream_arn, Data=self.data, PartitionKey="p")
        records = self.table.stream_records()
        inline = self.table.invocation_record(2, 3, records)
        event = [{**jsonable(r), "eventSourceARN": self.table.stream_arn} for r in records[2:]]
        inline["payload"] = json.dumps({"Records": event})
        broken = self.table.invocation_record(0, 0, records)
        broken["payload"] = json.dumps({"Records": [f"not an object: {self.value}"]})
        self.messages: list[Any] = [
            self.table.invocation_record(0, 1, records),
            self.stream.invocation_record(0, 1),
            inline,  # records inside a queue message: forged by definition, quarantined (#11)
            broken,  # a malformed one, the secret inside what is refused
        ]

    def forbidden(self) -> dict[str, str]:
        return {
            "record attribute value": self.value,
            "kinesis data": self.data.decode(),
            "kinesis data, base64": base64.b64encode(self.data).decode(),
            "secret access key": SECRET_KEY,
            "session token": SESSION_TOKEN,
            "signed URL": "X-Amz-Signature",
            "signature": "Signature=",
            "SigV4 authorization": "AWS4-HMAC-SHA256",
            "security token header": "X-Amz-Security-Token",
        }


def leaks(text: str, forbidden: dict[str, str]) -> list[str]:
    lowered = text.lower()
    return [what for what, value in forbidden.items() if value.lower() in lowered]


def json_lines(text: str) -> list[dict[str, Any]]:
    lines = [line for line in text.splitlines() if line.strip()]
    return [json.loads(line) for line in lines if line.startswith("{")]


def drain(queue: str, bucket: str, *extra: str) -> str:
    """`replayer drain` (in this process: the same code as the command), its stderr."""
    # Few retries (AWS_MAX_ATTEMPTS): faults reach replayer's own error paths, and their logs.
    env = {"AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_SESSION_TOKEN": SESSION_TOKEN, "AWS_MAX_ATTEMPTS": "2"}
    result = CliRunner().invoke(
        app,
        [
            "drain", "--queue", queue, "--to", f"s3://{bucket}/archive",
            "--quarantine", f"s3://{bucket}/quarantine", "--wait-seconds", "1", "--retry-base-seconds", "0",
            "--retry-max-seconds", "0", *extra,
        ],
        env=env,
    )  # fmt: skip
    assert result.exit_code in (0, 1, 2), result.stderr
    structlog.reset_defaults()
    return result.stderr + result.stdout


@pytest.mark.parametrize("level", [None, "info"], ids=["default", "info"])
def test_a_full_run_logs_no_record_contents_or_credentials(
    level: str | None, moto_endpoint: str, proxy: FaultProxy, bucket: str
) -> None:
    secrets = Secrets(moto_endpoint)
    queue = make_queue(moto_endpoint, visibility=2)
    send(moto_endpoint, queue, *secrets.messages)
    proxy.chaos = Chaos(11, rate=0.2, kinds=ERROR_KINDS)
    # And, in the first run, a stream read and an archive write that fail whatever the retries:
    # their errors are logged (then the next run finishes them).
    first = [True]
    proxy.add(
        Rule(
            lambda r: first[0] and r.operation == "GetRecords" and r.service == "kinesis",
            reply=service_error("kinesis", 500, "InternalFailure"),
        )
    )
    proxy.add(
        Rule(
            lambda r: first[0] and r.method == "PUT" and "/archive/dynamodb/" in r.path,
            reply=service_error("s3", 500, "InternalError"),
        )
    )
    extra = ["--log-level", level] if level else []
    logs = ""
    for _ in range(15):  # bounded: faults may leave work for another run
        logs += drain(queue, bucket, *extra)
        first[0] = False
        if queue_counts(moto_endpoint, queue) == (0, 0):
            break
    assert queue_counts(moto_endpoint, queue) == (0, 0)
    lines = json_lines(logs)
    events = {line["event"] for line in lines}
    assert "message_quarantined" in events  # the refused message was logged, with its reason
    assert {"read_failed", "sink_failed", "message_retried"} <= events  # the error paths logged too
    if level in ("info", "debug"):
        assert "range_done" in events and "message_deleted" in events
    assert leaks(logs, secrets.forbidden()) == []
    # The records themselves did reach the archive: the value was there to leak.
    s3 = client("s3", moto_endpoint)
    archived = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="archive/").get("Contents", [])]
    assert len([k for k in archived if k.endswith("records.jsonl.gz")]) == 2
    record_proof(
        f"log-secrets-{level or 'default'}",
        {
            "log_lines": len(lines),
            "faults_injected": proxy.chaos.total,
            "values_checked": len(secrets.forbidden()),
            "values_found_in_logs": 0,
        },
    )


def test_the_lambda_handler_logs_no_record_contents(
    moto_endpoint: str, proxy: FaultProxy, bucket: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    secrets = Secrets(moto_endpoint)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "replayer")
    monkeypatch.setenv("REPLAYER_TO", f"s3://{bucket}")
    monkeypatch.setenv("REPLAYER_LOG_LEVEL", "info")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    proxy.chaos = Chaos(12, rate=0.3, kinds=ERROR_KINDS)
    event = {
        "Records": [
            {
                "messageId": f"m-{i}",
                "receiptHandle": f"r-{i}",
                "body": json.dumps(body),
                "attributes": {"ApproximateReceiveCount": "1"},
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:failures",
            }
            for i, body in enumerate(secrets.messages)
        ]
    }
    lambda_handler.handler(event, LambdaContext())
    captured = capsys.readouterr()
    assert json_lines(captured.err)
    assert leaks(captured.err + captured.out, secrets.forbidden()) == []
