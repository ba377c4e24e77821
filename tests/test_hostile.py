"""Hostile input: every bad record gets its clear error and a quarantine, never a deletion.

The cases live in tests/events/hostile/cases.json (invalid JSON, wrong types, missing
fields, unknown envelopes, sequence numbers that are not numbers or run backwards,
negative and absurd batch sizes, ARNs and shard ids carrying path separators, `..` or
control characters, other accounts' streams); the ones built here add 256 KB bodies,
deep nesting, huge numbers and a real stream outside --allow-stream. They go through the
parser, the service (`replayer drain`), and the Lambda handler; and names that do pass the
parser are checked, in the keys and paths actually written, to be escaped.

Figures for docs/reliability.md go to `.cache/reliability/hostile.json` (printed with -s).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from replayer import lambda_handler
from replayer.cli import app
from replayer.errors import ParseError
from replayer.parse import parse_message
from replayer.sources.lambda_ import UnsettledError
from tests.support.aws import DynamoTable, client, json_objects, keys, make_queue, queue_counts, send
from tests.support.faultproxy import record_proof
from tests.support.handler import LambdaContext
from tests.support.hostile import CASES, MANIFEST, SQS_MAX_BODY

runner = CliRunner()
NOT_PARSED = [c for c in CASES if not c.get("parses")]


def test_the_cases_are_what_they_say() -> None:
    names = [c["name"] for c in CASES]
    assert len(names) == len(set(names))
    sizes = [len(c["body_text"].encode("utf-8", "surrogatepass")) for c in CASES]
    assert max(sizes) <= SQS_MAX_BODY and sum(s > 250_000 for s in sizes) == 4


@pytest.mark.parametrize("case", NOT_PARSED, ids=[c["name"] for c in NOT_PARSED])
def test_the_parser_refuses_each_with_a_clear_error(case: dict[str, Any]) -> None:
    with pytest.raises(ParseError) as error:
        parse_message(case["body_text"], path="$")
    message = str(error.value)
    assert case["expect"] in message
    assert len(message) < 600  # a huge body is never quoted back whole
    assert message.isprintable()  # control characters are shown escaped, never raw


# ---- through the service


# A smaller set, for the variants: every kind of case is in it, and every 256 KB body.
SAMPLE = [c for i, c in enumerate(CASES) if i % 5 == 0 or len(c["body_text"]) > 250_000]


def hostile_queue(
    endpoint: str, table: DynamoTable, cases_sent: list[dict[str, Any]] = CASES
) -> tuple[str, dict[str, dict[str, Any]], str]:
    """A queue holding the cases, one real stream outside --allow-stream, and one good range."""
    outsider = DynamoTable(endpoint)
    outsider.put(1)
    cases = {c["name"]: c for c in cases_sent}
    cases["stream-outside-allow-list"] = {
        "name": "stream-outside-allow-list",
        "body_text": json.dumps(outsider.invocation_record(0, 0)),
        "expect": "is not in --allow-stream",
    }
    table.put(2)
    good = json.dumps(table.invocation_record(0, 1))
    queue = make_queue(endpoint)
    send(endpoint, queue, *(c["body_text"] for c in cases.values()), good)
    return queue, cases, good


SAFE_KEY = re.compile(r"[A-Za-z0-9_.:%-]+")


def assert_safe(name: str) -> None:
    """A key or relative path whose every segment is plain, and none climbs or hides."""
    for segment in name.split("/"):
        assert SAFE_KEY.fullmatch(segment), name
        assert not segment.startswith("."), name


def test_drain_quarantines_every_hostile_message_with_its_reason(
    table: DynamoTable, bucket: str, moto_endpoint: str
) -> None:
    queue, cases, _ = hostile_queue(moto_endpoint, table)
    result = runner.invoke(
        app,
        [
            "drain", "--queue", queue, "--to", f"s3://{bucket}/archive", "--allow-stream", table.stream_arn,
            "--quarantine", f"s3://{bucket}/quarantine", "--wait-seconds", "1", "--json",
        ],
    )  # fmt: skip
    assert result.exit_code == 1, result.stderr  # 1: something was rejected
    document = json.loads(result.stdout)
    assert document["messages"]["quarantined"] == len(cases)
    assert document["messages"]["deleted"] == len(cases) + 1  # each after its quarantine; the good one
    assert queue_counts(moto_endpoint, queue) == (0, 0)
    held = {}
    for key, doc in json_objects(moto_endpoint, bucket, "quarantine/").items():
        assert_safe(key)
        held[doc["body"]] = doc
    assert len(held) == len(cases)
    for case in cases.values():
        doc = held[case["body_text"]]  # the body, kept exactly
        assert case["expect"] in doc["reason"], (case["name"], doc["reason"])
        assert doc["message_id"] and doc["source"] == queue
    archive = keys(moto_endpoint, bucket, "archive/")
    assert len(archive) == 2 and all(table.name in k for k in archive)  # only the good range
    for key in archive:
        assert_safe(key)
    record_proof(
        "hostile",
        {
            "cases_in_manifest": len(MANIFEST["cases"]),
            "cases_built_in_test": len(cases) - len(MANIFEST["cases"]),
            "bad_inputs_tried": len(cases),
            "quarantined_with_reason": len(held),
            "deleted_without_quarantine": 0,
            "archive_keys_written_for_bad_input": len(archive) - 2,
        },
    )


def test_without_a_quarantine_no_hostile_message_is_deleted(
    table: DynamoTable, bucket: str, moto_endpoint: str
) -> None:
    queue, cases, _ = hostile_queue(moto_endpoint, table, SAMPLE)
    result = runner.invoke(
        app,
        [
            "drain", "--queue", queue, "--to", f"s3://{bucket}", "--allow-stream", table.stream_arn,
            "--wait-seconds", "1", "--json",
        ],
    )  # fmt: skip
    document = json.loads(result.stdout)
    assert document["messages"]["deleted"] == 1  # the good range only
    assert document["messages"]["left"] == len(cases)
    assert sum(queue_counts(moto_endpoint, queue)) == len(cases)
    assert len(keys(moto_endpoint, bucket)) == 2


def test_an_sqs_quarantine_keeps_what_it_can_and_leaves_the_rest(
    table: DynamoTable, bucket: str, moto_endpoint: str
) -> None:
    """SQS carries at most 256 KiB with the reason attached: the largest bodies stay on their queue."""
    queue, cases, _ = hostile_queue(moto_endpoint, table, SAMPLE)
    quarantine = make_queue(moto_endpoint)
    result = runner.invoke(
        app,
        [
            "drain", "--queue", queue, "--to", f"s3://{bucket}", "--allow-stream", table.stream_arn,
            "--quarantine", quarantine, "--wait-seconds", "1", "--retry-base-seconds", "60", "--json",
        ],
    )  # fmt: skip
    document = json.loads(result.stdout)
    sqs = client("sqs", moto_endpoint)
    kept: dict[str, str] = {}
    for _ in range(30):  # bounded: receive until the quarantine queue is drained
        messages = sqs.receive_message(
            QueueUrl=quarantine, MaxNumberOfMessages=10, MessageAttributeNames=["All"], WaitTimeSeconds=0
        ).get("Messages", [])
        if not messages:
            break
        for m in messages:
            body = m["Body"]
            if m["MessageAttributes"].get("replayer-body-encoding", {}).get("StringValue") == "json-string":
                body = json.loads(body)
            kept[body] = m["MessageAttributes"]["replayer-reason"]["StringValue"]
    too_big = [
        c
        for c in cases.values()
        if len(c["body_text"].encode("utf-8", "surrogatepass")) > SQS_MAX_BODY - 1024
    ]
    assert len(too_big) == 4
    for case in cases.values():
        if case in too_big:
            assert case["body_text"] not in kept
        else:
            assert case["expect"] in kept[case["body_text"]], case["name"]
    assert document["messages"]["quarantined"] == len(cases) - len(too_big)
    assert sum(queue_counts(moto_endpoint, queue)) == len(too_big)  # still there, for the redrive policy


# ---- through the Lambda handler


def lambda_sqs_event(cases: dict[str, dict[str, Any]], good: str) -> dict[str, Any]:
    bodies = [c["body_text"] for c in cases.values()] + [good]
    return {
        "Records": [
            {
                "messageId": f"m-{i}",
                "receiptHandle": f"r-{i}",
                "body": body,
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:failures",
                "awsRegion": "us-east-1",
            }
            for i, body in enumerate(bodies)
        ]
    }


def test_lambda_handler_quarantines_or_reports_every_hostile_message(
    table: DynamoTable, bucket: str, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, cases, good = hostile_queue(moto_endpoint, table)
    event = lambda_sqs_event(cases, good)
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "replayer")
    monkeypatch.setenv("REPLAYER_TO", f"s3://{bucket}/archive")
    monkeypatch.setenv("REPLAYER_ALLOW_STREAMS", table.stream_arn)
    monkeypatch.setenv("REPLAYER_RETRY_BASE_SECONDS", "0")

    # Without a quarantine: every hostile message is handed back; only the good one is done.
    answer = lambda_handler.handler(event, LambdaContext())
    failed = {f["itemIdentifier"] for f in answer["batchItemFailures"]}
    assert failed == {f"m-{i}" for i in range(len(cases))}

    lambda_handler.reset()
    monkeypatch.setenv("REPLAYER_QUARANTINE", f"s3://{bucket}/quarantine")
    answer = lambda_handler.handler(event, LambdaContext())
    assert answer == {"batchItemFailures": []}
    held = {}
    for key, doc in json_objects(moto_endpoint, bucket, "quarantine/").items():
        assert_safe(key)
        held[doc["body"]] = doc["reason"]
    for case in cases.values():
        assert case["expect"] in held[case["body_text"]], case["name"]
    assert {k.split("/")[-1] for k in keys(moto_endpoint, bucket, "archive/")} == {
        "records.jsonl.gz",
        "invocation.json",
    }


def test_lambda_handler_sns_event_with_hostile_messages_raises_for_a_retry(
    table: DynamoTable, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SNS has no per-item answer: one unsettled message fails the invocation (nothing is lost)."""
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "replayer")
    monkeypatch.setenv("REPLAYER_TO", f"s3://{bucket}")
    picked = [c for c in CASES if c["name"] in ("shard-slash", "arn-table-climbs", "start-after-end")]
    event = {
        "Records": [
            {"EventSource": "aws:sns", "Sns": {"MessageId": c["name"], "Message": c["body_text"]}}
            for c in picked
        ]
    }
    with pytest.raises(UnsettledError, match="3 of 3 not settled"):
        lambda_handler.handler(event, LambdaContext())
    assert keys(table.endpoint, bucket) == []


# ---- names the parser accepts never steer a key or a path


WEIRD_BUT_VALID = [
    "arn:aws:dynamodb:us-east-1:123456789012:table/.hidden/stream/.x",
    "arn:aws:dynamodb:us-east-1:123456789012:table/a..b/stream/2024-01-01T00:00:00.000",
    "arn:aws:dynamodb:us-east-1:123456789012:table/..x/stream/..y",
    "arn:aws:kinesis:us-east-1:123456789012:stream/..x",
    "arn:aws:kinesis:us-east-1:123456789012:stream/-.-",
]


def weird_records(*, inline: bool) -> str:
    """One invocation record per weird stream name; `inline`: carrying its batch (two records) inline,
    as an S3 on-failure destination does, so it is archived although the stream does not exist."""
    lines = []
    for arn in WEIRD_BUT_VALID:
        kind = "DDBStreamBatchInfo" if ":dynamodb:" in arn else "KinesisBatchInfo"
        record = copy.deepcopy(MANIFEST["base"]["ddb" if kind == "DDBStreamBatchInfo" else "kinesis"])
        record[kind]["streamArn"] = arn
        if inline:
            first, last = record[kind]["startSequenceNumber"], record[kind]["endSequenceNumber"]
            shape = (
                ("dynamodb", "SequenceNumber")
                if kind == "DDBStreamBatchInfo"
                else ("kinesis", "sequenceNumber")
            )
            batch = [{shape[0]: {shape[1]: seq}, "eventSourceARN": arn} for seq in (first, last)]
            record[kind]["batchSize"] = len(batch)
            record["payload"] = json.dumps({"Records": batch})
        lines.append(json.dumps(record))
    return "\n".join(lines) + "\n"


def test_names_that_pass_the_parser_are_escaped_in_keys_and_paths(
    bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    """Ranges carried inline are archived (records and manifest) under escaped names only; the same
    ranges without their records name streams that do not exist: rejected, nothing written."""
    root = tmp_path / "archive"
    sinks = ["--to", f"s3://{bucket}/a", "--to", f"file:{root}", "--json", "--no-preflight"]
    for inline in (False, True):
        source = tmp_path / f"weird-{inline}.jsonl"
        source.write_text(weird_records(inline=inline))
        result = runner.invoke(app, ["replay", str(source), *sinks])
        document = json.loads(result.stdout)
        if not inline:
            assert [(r["outcome"], r["reason"].split(":")[0]) for r in document["ranges"]] == [
                ("rejected", "no such stream")
            ] * len(WEIRD_BUT_VALID)
            assert keys(moto_endpoint, bucket, "a/") == [] and not root.exists()  # no loss report
    assert [r["outcome"] for r in document["ranges"]] == ["replayed"] * len(WEIRD_BUT_VALID)
    written = keys(moto_endpoint, bucket, "a/")
    assert len(written) >= 2 * len(WEIRD_BUT_VALID)  # records and a manifest each
    for key in written:
        assert_safe(key.removeprefix("a/"))
    files = [p for p in root.rglob("*") if p.is_file()]
    assert len(files) == len(written)
    for path in files:
        assert path.resolve().is_relative_to(root.resolve())
        assert_safe(path.relative_to(root).as_posix())
    assert {p.relative_to(root).as_posix() for p in files} == {k.removeprefix("a/") for k in written}
    assert any("%2Ehidden" in k for k in written) and any("%2E.x" in k for k in written)
