"""The trust boundary (#11): what a message may bring, and what replayer believes, over HTTP on emulators.

Someone with sqs:SendMessage on the failure queue can name ranges (the allow-list bounds
which streams), but never supply records: a queue or SNS message carrying `payload` is
quarantined with the reason. A file the operator names may carry payloads, and even then
they are used only when they are exactly the batch their range names.
"""

from __future__ import annotations

import gzip
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from replayer.archive.layout import range_path
from replayer.cli import app
from replayer.parse import parse_message
from replayer.wire import jsonable
from tests.support.aws import DynamoTable, client, json_objects, keys, make_queue, queue_counts, send, unique
from tests.support.faultproxy import FaultProxy
from tests.support.ministack import Ministack, RepairFunction

runner = CliRunner()


def cli(*args: str) -> Any:
    result = runner.invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def seqs(records: list[dict[str, Any]]) -> list[str]:
    return [r["dynamodb"]["SequenceNumber"] for r in records]


def forged(table: DynamoTable, first: int, last: int, records: list[dict[str, Any]]) -> dict[str, Any]:
    """A genuine-looking invocation record for a real range, bringing one made-up record of its own."""
    record = table.invocation_record(first, last)
    made_up = {
        "eventID": "forged",
        "eventName": "INSERT",
        "eventSource": "aws:dynamodb",
        "eventSourceARN": table.stream_arn,
        "dynamodb": {
            "SequenceNumber": records[first]["dynamodb"]["SequenceNumber"],
            "NewImage": {"pk": {"S": "evil"}},
        },
    }
    record["payload"] = json.dumps({"Records": [made_up]})
    return record


def test_the_forged_message_race_archives_and_redrives_only_the_streams_records(
    table: DynamoTable, bucket: str, moto_endpoint: str, ministack: Ministack, lambda_endpoint: str
) -> None:
    table.put(3)
    stream = jsonable(table.stream_records())
    lie = forged(table, 0, 2, stream)
    sns_lie = {"Type": "Notification", "MessageId": str(uuid.uuid4()), "Message": json.dumps(lie)}
    genuine = table.invocation_record(0, 2)
    queue = make_queue(moto_endpoint)
    send(moto_endpoint, queue, lie, sns_lie, genuine)  # the forgeries first: they used to win the race

    result = cli(
        "drain", "--queue", queue, "--to", f"s3://{bucket}/archive", "--quarantine", f"s3://{bucket}/q",
        "--allow-stream", table.stream_arn, "--wait-seconds", "1", "--json",
    )  # fmt: skip
    document = json.loads(result.stdout)
    assert document["messages"]["quarantined"] == 2 and document["messages"]["deleted"] == 3
    assert queue_counts(moto_endpoint, queue) == (0, 0)
    quarantined = json_objects(moto_endpoint, bucket, "q/")
    assert len(quarantined) == 2
    assert all("carries an inline payload" in q["reason"] for q in quarantined.values())

    (failure,) = parse_message(genuine)
    prefix = f"archive/{range_path(failure)}/"
    assert sorted(k[len(prefix) :] for k in keys(moto_endpoint, bucket, prefix)) == [
        "invocation.json",
        "records.jsonl.gz",
    ]
    repair = RepairFunction(ministack)
    result = cli(
        "redrive",
        "--from",
        f"s3://{bucket}/archive",
        "--to",
        f"lambda:{repair.name}",
        "--json",
        "--no-preflight",
    )
    assert result.exit_code == 0, result.output
    received = repair.received()
    assert seqs(received) == seqs(stream)  # the stream's three, never the made-up one
    assert not any(r.get("eventID") == "forged" for r in received)


def s3_destination(
    table: DynamoTable, first: int, last: int, payload: list[dict[str, Any]]
) -> dict[str, Any]:
    record = table.invocation_record(first, last)
    record["payload"] = json.dumps({"Records": payload})
    return record


def replay_file(tmp_path: Path, record: dict[str, Any]) -> dict[str, Any]:
    path = tmp_path / f"{uuid.uuid4().hex}.json"
    path.write_text(json.dumps(record))
    result = cli("replay", str(path), "--to", f"file:{tmp_path / 'archive'}", "--json")
    assert result.exit_code in (0, 1), result.output
    (outcome,) = json.loads(result.stdout)["ranges"]
    return dict(outcome)


@pytest.mark.parametrize(
    ("case", "why"),
    [
        ("empty", "it holds no records"),
        ("no sequence numbers", "has no dynamodb sequence number"),
        ("outside the range", "is outside the range"),
        ("fewer than batchSize", "its first and last records are not the range's start and end"),
        ("another stream", "is of another stream"),
    ],
)
def test_a_trusted_payload_that_is_not_its_batch_is_replaced_by_the_stream(
    case: str, why: str, table: DynamoTable, tmp_path: Path, proxy: FaultProxy
) -> None:
    table.put(4)
    stream = jsonable(table.stream_records())
    batch = [{**r, "eventSourceARN": table.stream_arn} for r in stream[:3]]
    payload = {
        "empty": [],
        "no sequence numbers": [{k: v for k, v in r.items() if k != "dynamodb"} for r in batch],
        "outside the range": [*batch, {**stream[3], "eventSourceARN": table.stream_arn}],
        "fewer than batchSize": batch[:2],
        "another stream": [{**r, "eventSourceARN": table.stream_arn + "x"} for r in batch],
    }[case]
    outcome = replay_file(tmp_path, s3_destination(table, 0, 2, payload))

    assert outcome["outcome"] == "replayed" and outcome["recovered"] == 3  # never a silent zero
    assert any(why in note and "read from the stream" in note for note in outcome["notes"]), outcome["notes"]
    assert proxy.count("GetRecords") >= 1


def test_a_trusted_payload_that_is_exactly_its_batch_is_used_without_reading_the_stream(
    table: DynamoTable, tmp_path: Path, proxy: FaultProxy
) -> None:
    table.put(3)
    batch = [{**r, "eventSourceARN": table.stream_arn} for r in jsonable(table.stream_records())]
    outcome = replay_file(tmp_path, s3_destination(table, 0, 2, batch))
    assert outcome["outcome"] == "replayed" and outcome["recovered"] == 3
    assert proxy.count("GetRecords") == 0


def test_a_queue_message_with_an_empty_payload_is_quarantined_not_a_silent_zero(
    table: DynamoTable, bucket: str, moto_endpoint: str
) -> None:
    table.put(1)
    queue = make_queue(moto_endpoint)
    send(moto_endpoint, queue, s3_destination(table, 0, 0, []))
    result = cli(
        "drain", "--queue", queue, "--to", f"s3://{bucket}/archive", "--quarantine", f"s3://{bucket}/q",
        "--wait-seconds", "1", "--json",
    )  # fmt: skip
    assert json.loads(result.stdout)["messages"]["quarantined"] == 1
    (quarantined,) = json_objects(moto_endpoint, bucket, "q/").values()
    assert "carries an inline payload" in quarantined["reason"]
    assert client("s3", moto_endpoint).list_objects_v2(Bucket=bucket, Prefix="archive/").get("KeyCount") == 0


# ---------------------------------------------------------------- #21.1: claims judged per message


def unfiltered_mapping(endpoint: str, stream_arn: str, batch_size: int) -> str:
    """A function with an event source mapping on the stream, no filter: the batch is the ceiling.
    Its function ARN (what a genuine invocation record names)."""
    import io
    import zipfile

    role = client("iam", endpoint).create_role(RoleName=unique("consumer"), AssumeRolePolicyDocument="{}")
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as z:
        z.writestr("handler.py", "def handler(event, context):\n    return None\n")
    lam = client("lambda", endpoint)
    function: str = lam.create_function(
        FunctionName=unique("consumer"), Runtime="python3.12", Role=role["Role"]["Arn"],
        Handler="handler.handler", Code={"ZipFile": code.getvalue()},
    )["FunctionArn"]  # fmt: skip
    lam.create_event_source_mapping(
        EventSourceArn=stream_arn,
        FunctionName=function,
        StartingPosition="TRIM_HORIZON",
        BatchSize=batch_size,
    )
    return function


@pytest.mark.parametrize("order", ["forged first", "genuine first"])
def test_a_forged_duplicate_never_decides_the_genuine_messages_fate(
    order: str, table: DynamoTable, bucket: str, moto_endpoint: str, proxy: FaultProxy
) -> None:
    """#21.1: two messages name one range, a forged one claiming batchSize 1 and the genuine one
    (batchSize 5, its mapping known and unfiltered): each is judged by its own claims."""
    table.put(5)
    function = unfiltered_mapping(moto_endpoint, table.stream_arn, 5)
    genuine = table.invocation_record(0, 4)
    genuine["requestContext"]["functionArn"] = function
    lie = table.invocation_record(0, 4, batchSize=1)
    lie["requestContext"]["functionArn"] = function
    queue = make_queue(moto_endpoint)
    send(moto_endpoint, queue, *((lie, genuine) if order == "forged first" else (genuine, lie)))

    result = cli(
        "drain", "--queue", queue, "--to", f"s3://{bucket}/archive", "--quarantine", f"s3://{bucket}/q",
        "--allow-stream", table.stream_arn, "--wait-seconds", "1", "--json",
    )  # fmt: skip
    document = json.loads(result.stdout)
    outcomes = sorted((r["outcome"], r["range"]["batch_size"]) for r in document["ranges"])
    assert outcomes == [("rejected", 1), ("replayed", 5)], document["ranges"]
    assert document["messages"]["quarantined"] == 1 and document["messages"]["deleted"] == 2
    assert queue_counts(moto_endpoint, queue) == (0, 0)
    (quarantined,) = json_objects(moto_endpoint, bucket, "q/").values()
    assert "more than 1 records" in quarantined["reason"]
    assert json.loads(quarantined["body"])["DDBStreamBatchInfo"]["batchSize"] == 1  # the forged one, only

    (failure,) = parse_message(genuine)
    prefix = f"archive/{range_path(failure)}/"
    s3 = client("s3", moto_endpoint)
    body = s3.get_object(Bucket=bucket, Key=prefix + "records.jsonl.gz")["Body"].read()
    archived = [json.loads(line) for line in gzip.decompress(body).splitlines()]
    assert seqs(archived) == seqs(jsonable(table.stream_records()))  # all five, from the stream


@pytest.mark.parametrize(("order", "reads"), [("genuine first", 1), ("forged first", 2)])
async def test_claims_on_one_range_share_the_read_and_each_keeps_its_own_verdict(
    order: str, reads: int, table: DynamoTable, proxy: FaultProxy, tmp_path: Path
) -> None:
    """#21.1: worked at once, the two claims read the stream once when the first read can judge the
    second (5 records judged against a ceiling of 1), twice when it cannot (a read stopped at 1)."""
    from replayer.allow import AllowList
    from replayer.aws import Clients
    from replayer.core import Replayer
    from replayer.model import OutcomeKind
    from replayer.readers import Readers
    from replayer.sinks import FileSink

    table.put(5)
    stream = jsonable(table.stream_records())
    when = {
        "approximateArrivalOfFirstRecord": "2026-01-01T00:00:00Z",
        "approximateArrivalOfLastRecord": "2026-01-01T00:00:00Z",
    }
    (genuine,) = parse_message(table.invocation_record(0, 4, stream, **when))
    (lie,) = parse_message(table.invocation_record(0, 4, stream, batchSize=1, **when))
    async with Clients() as clients:
        readers = Readers(
            clients, unfiltered=lambda f: True
        )  # the batch is the ceiling, as for a known mapping
        replayer = Replayer(
            clients, [FileSink(tmp_path)], readers=readers, allow=AllowList.of(["*"]), find_mappings=False
        )
        items = [genuine, lie] if order == "genuine first" else [lie, genuine]
        tickets = await replayer.scheduler(concurrency=2).run(items)
    outcomes = {t.item.batch_size: t.result() for t in tickets}
    kept, refused = outcomes[5], outcomes[1]
    assert kept is not None and kept.kind is OutcomeKind.REPLAYED and kept.recovered == 5
    assert refused is not None and refused.kind is OutcomeKind.REJECTED
    assert "more than 1 records" in refused.reason
    assert proxy.count("GetShardIterator") == reads
