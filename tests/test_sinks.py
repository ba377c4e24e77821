"""The S3, file and stdout sinks: layout, create-only writes, loss reports."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
from pathlib import Path
from typing import Any

import pytest

from replayer.archive.layout import range_path, safe_segment
from replayer.aws import Clients
from replayer.errors import ConfigError
from replayer.model import Failure, Gap, StreamKind, StreamRecord
from replayer.parse import parse_message
from replayer.readers import Readers, ReadResult
from replayer.sinks import (
    SINK_KINDS,
    FileSink,
    S3Sink,
    StdoutSink,
    describe_uri_forms,
    durable_kinds,
    sink_from_uri,
    sink_table_markdown,
)
from tests.support import ROOT
from tests.support.aws import REGION, KinesisStream, client, unique

ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2024-01-02T03:04:05.678"


def failure(start: str = "100", end: str = "102") -> Failure:
    return Failure(
        StreamKind.DYNAMODB,
        ARN,
        "shardId-00000001573689847184-864758bb",
        start,
        end,
        batch_size=3,
        raw={"DDBStreamBatchInfo": {"startSequenceNumber": start}},
    )


def result(*sequences: int, gaps: tuple[Gap, ...] = ()) -> ReadResult:
    records = tuple(
        StreamRecord(str(s), json.dumps({"dynamodb": {"SequenceNumber": str(s)}, "n": s}).encode())
        for s in sequences
    )
    return ReadResult(records, gaps)


def test_range_path_is_derived_from_the_range_only() -> None:
    path = range_path(failure())
    assert path == (
        "dynamodb/123456789012/us-east-1/orders/2024-01-02T03%3A04%3A05.678/"
        "shardId-00000001573689847184-864758bb/100-102"
    )
    assert range_path(failure("0100", "102")) == path  # the same numbers, written differently


@pytest.mark.parametrize("hostile", ["..", ".", "a/b", "../../etc", "x\x00y", "line\nbreak", "é", "", "%2F"])
def test_safe_segment_never_climbs_or_splits(hostile: str) -> None:
    seg = safe_segment(hostile)
    assert "/" not in seg and seg not in (".", "..", "") and seg.isprintable() and seg.isascii()
    assert not seg.startswith(".")


async def test_s3_archive_is_written_once(bucket: str, moto_endpoint: str) -> None:
    s3 = client("s3", moto_endpoint)
    async with Clients() as clients:
        sink = S3Sink(clients, bucket, "archive/dev")
        first = await sink.deliver(failure(), result(100, 101, 102))
        key = sink.key(failure(), "records.jsonl.gz")
        etag = s3.head_object(Bucket=bucket, Key=key)["ETag"]
        # a retry that found the last record trimmed: the archive, vouched for by its manifest, keeps it
        second = await sink.deliver(failure(), result(100, 101, gaps=(Gap("102", "102", "trimmed"),)))
    assert first.location == f"s3://{bucket}/{key}" and not first.already_there
    assert second.already_there
    assert key.startswith("archive/dev/dynamodb/123456789012/")
    obj = s3.get_object(Bucket=bucket, Key=key)
    assert s3.head_object(Bucket=bucket, Key=key)["ETag"] == etag
    lines = gzip.decompress(obj["Body"].read()).splitlines()
    assert [json.loads(line)["n"] for line in lines] == [100, 101, 102]
    manifest = json.loads(
        s3.get_object(Bucket=bucket, Key=sink.key(failure(), "invocation.json"))["Body"].read()
    )
    assert manifest["range"]["range_id"] == failure().range_id
    assert manifest["archived"]["records"] == 3
    assert manifest["invocation_record"] == {"DDBStreamBatchInfo": {"startSequenceNumber": "100"}}
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert not any(k.endswith("loss-report.json") for k in keys)


async def test_s3_loss_report_says_exactly_what_is_missing(bucket: str, moto_endpoint: str) -> None:
    gap = Gap("100", "100", "trimmed: past the stream's retention")
    async with Clients() as clients:
        sink = S3Sink(clients, bucket)
        delivery = await sink.deliver(failure(), result(101, 102, gaps=(gap,)))
    assert delivery.report == f"s3://{bucket}/{sink.key(failure(), 'loss-report.json')}"
    report = json.loads(
        client("s3", moto_endpoint)
        .get_object(Bucket=bucket, Key=sink.key(failure(), "loss-report.json"))["Body"]
        .read()
    )
    assert report["outcome"] == "partial"
    assert report["missing"] == [{"first_sequence": "100", "last_sequence": "100", "reason": gap.reason}]
    assert report["recovered"]["records"] == 2
    assert report["invocation_record"]["DDBStreamBatchInfo"]["startSequenceNumber"] == "100"


async def test_s3_sink_failure_is_a_sink_error(moto_endpoint: str) -> None:
    from replayer.sinks import SinkError

    async with Clients() as clients:
        sink = S3Sink(clients, "no-such-bucket-here")
        with pytest.raises(SinkError, match="NoSuchBucket"):
            await sink.deliver(failure(), result(100))


async def test_file_archive_has_the_same_layout_and_is_create_only(tmp_path: Path) -> None:
    sink = FileSink(tmp_path)
    await sink.deliver(failure(), result(100, 101, 102))
    again = await sink.deliver(failure(), result(100, gaps=(Gap("101", "102", "trimmed"),)))
    folder = tmp_path.joinpath(*range_path(failure()).split("/"))
    assert again.already_there
    assert sorted(p.name for p in folder.iterdir()) == ["invocation.json", "records.jsonl.gz"]
    lines = gzip.decompress((folder / "records.jsonl.gz").read_bytes()).splitlines()
    assert len(lines) == 3
    assert not list(tmp_path.rglob(".tmp-*"))


async def test_expired_range_writes_only_manifest_and_report(tmp_path: Path) -> None:
    gap = Gap("100", "102", "trimmed")
    delivery = await FileSink(tmp_path).deliver(failure(), result(gaps=(gap,)))
    folder = tmp_path.joinpath(*range_path(failure()).split("/"))
    assert sorted(p.name for p in folder.iterdir()) == ["invocation.json", "loss-report.json"]
    assert delivery.report == str(folder / "loss-report.json")
    assert json.loads((folder / "loss-report.json").read_text())["outcome"] == "expired"


async def test_stdout_sink_writes_json_lines() -> None:
    out = io.BytesIO()
    await StdoutSink(out).deliver(failure(), result(100, 101))
    assert [json.loads(line)["n"] for line in out.getvalue().splitlines()] == [100, 101]


@pytest.mark.parametrize(
    ("uri", "kind"),
    [
        ("s3://b/p/q", S3Sink),
        ("s3://b", S3Sink),
        ("file:/tmp/x", FileSink),
        ("file:rel", FileSink),
        ("-", StdoutSink),
    ],
)
def test_sink_uris(uri: str, kind: type[Any]) -> None:
    assert isinstance(sink_from_uri(uri, Clients()), kind)


@pytest.mark.parametrize("uri", ["s3://", "file:", "http://x", "bucket", ""])
def test_bad_sink_uris_say_what_is_accepted(uri: str) -> None:
    with pytest.raises(ConfigError, match="expected"):
        sink_from_uri(uri, Clients())


def test_one_registry_names_every_sink_kind_for_help_errors_and_the_readme() -> None:
    forms = describe_uri_forms()
    assert forms == "s3://BUCKET[/PREFIX], file:DIR, lambda:NAME[:QUALIFIER] or -"
    assert durable_kinds() == "s3://BUCKET[/PREFIX] or file:DIR"
    for kind in SINK_KINDS:
        assert kind.form in forms
    with pytest.raises(ConfigError) as bad:
        sink_from_uri("http://x", Clients())
    assert forms in str(bad.value)
    page = (ROOT / "docs" / "cli.md").read_text()
    between = page.split("<!-- sinks:start -->\n", 1)[1].split("\n<!-- sinks:end -->", 1)[0]
    assert between == sink_table_markdown(), "paste replayer.sinks.sink_table_markdown() into docs/cli.md"


def consumer_function(moto_endpoint: str) -> tuple[str, str]:
    """A function in the emulator (moto runs none): its name and its execution role's ARN."""
    iam = client("iam", moto_endpoint)
    role = iam.create_role(RoleName=unique("consumer"), AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    name = unique("consumer")
    client("lambda", moto_endpoint).create_function(
        FunctionName=name,
        Runtime="python3.12",
        Role=role,
        Handler="h.h",
        Code={"ZipFile": b"PK\x05\x06" + b"\0" * 18},
    )
    return name, role


def test_archived_kinesis_records_carry_the_failed_functions_role(
    kinesis_stream: KinesisStream, moto_endpoint: str, tmp_path: Path
) -> None:
    """Archived as Lambda delivered them: invokeIdentityArn is the execution role of the function that failed."""
    name, role = consumer_function(moto_endpoint)
    kinesis_stream.put(2)
    record = kinesis_stream.invocation_record(0, 1)
    record["requestContext"]["functionArn"] = f"arn:aws:lambda:{REGION}:123456789012:function:{name}"
    (failure,) = parse_message(record)

    async def run() -> None:
        async with Clients() as clients:
            await sink_from_uri(f"file:{tmp_path}", clients).deliver(
                failure, await Readers(clients).for_failure(failure).read(failure)
            )

    asyncio.run(run())
    body = (tmp_path.joinpath(*range_path(failure).split("/")) / "records.jsonl.gz").read_bytes()
    assert [json.loads(line)["invokeIdentityArn"] for line in gzip.decompress(body).splitlines()] == [
        role,
        role,
    ]


def test_stdout_prints_kinesis_records_with_the_role_the_archive_of_the_same_run_carries(
    kinesis_stream: KinesisStream, moto_endpoint: str, tmp_path: Path
) -> None:
    """#21.11: `--to -` and the archive of one run print and keep the same invokeIdentityArn."""
    from typer.testing import CliRunner

    from replayer.cli import app

    name, role = consumer_function(moto_endpoint)
    kinesis_stream.put(3)
    record = kinesis_stream.invocation_record(0, 2)
    record["requestContext"]["functionArn"] = f"arn:aws:lambda:{REGION}:123456789012:function:{name}"
    (failure,) = parse_message(record)
    path = tmp_path / "record.json"
    path.write_text(json.dumps(record))
    result = CliRunner().invoke(app, ["replay", str(path), "--to", f"file:{tmp_path / 'a'}", "--to", "-"])
    assert result.exit_code == 0, result.output
    printed = [
        json.loads(line) for line in result.stdout.splitlines() if line.startswith('{"invokeIdentityArn"')
    ]
    body = (tmp_path.joinpath("a", *range_path(failure).split("/")) / "records.jsonl.gz").read_bytes()
    archived = [json.loads(line) for line in gzip.decompress(body).splitlines()]
    assert (
        [r["invokeIdentityArn"] for r in printed] == [r["invokeIdentityArn"] for r in archived] == [role] * 3
    )
    assert printed == archived
