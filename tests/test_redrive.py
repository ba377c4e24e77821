"""`replayer redrive`: archived ranges (moto S3 or a directory) re-driven to a function running in ministack."""

from __future__ import annotations

import asyncio
import gzip
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from replayer.archive.layout import range_path
from replayer.archive.manifest import archived_range
from replayer.aws import Clients
from replayer.cli import app
from replayer.model import Failure, Gap
from replayer.parse import parse_message
from replayer.readers import Readers, ReadResult
from replayer.sinks import FileSink
from replayer.sources.archive import Selection, parse_time
from tests.support.aws import DynamoTable, client
from tests.support.faultproxy import FaultProxy, Rule
from tests.support.ministack import Ministack, RepairFunction

runner = CliRunner()


def run(*args: str) -> Any:
    return runner.invoke(app, list(args), catch_exceptions=False)


def redrive(source: str, *args: str) -> tuple[int, dict[str, Any]]:
    result = run("redrive", "--from", source, "--json", *args)
    assert result.exit_code in (0, 1), result.output
    return result.exit_code, json.loads(result.stdout)


def seqs(records: list[dict[str, Any]]) -> list[str]:
    return [r["dynamodb"]["SequenceNumber"] for r in records]


def archive(
    table: DynamoTable, bounds: list[tuple[int, int]], to: str, tmp_path: Path, **info: Any
) -> list[Failure]:
    """Replay ranges first..last of the table's stream into an archive, the way an operator would."""
    stream = table.stream_records()
    records = [table.invocation_record(first, last, stream, **info) for first, last in bounds]
    path = tmp_path / f"ranges-{uuid.uuid4().hex}.json"
    path.write_text(json.dumps(records))
    result = run("replay", str(path), "--to", to)
    assert result.exit_code == 0, result.output
    return [parse_message(r)[0] for r in records]


def archived_records(body: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in gzip.decompress(body).splitlines()]


def s3_records(moto_endpoint: str, bucket: str, prefix: str, failure: Failure) -> list[dict[str, Any]]:
    key = f"{prefix}/{range_path(failure)}/records.jsonl.gz"
    return archived_records(client("s3", moto_endpoint).get_object(Bucket=bucket, Key=key)["Body"].read())


def folder(root: Path, failure: Failure) -> Path:
    return root.joinpath(*range_path(failure).split("/"))


def markers(root: Path, failure: Failure) -> list[str]:
    found = folder(root, failure) / "redriven"
    return sorted(p.name for p in found.iterdir()) if found.is_dir() else []


def test_redrive_from_s3_delivers_each_range_exactly_marks_it_and_skips_it_next_time(
    table: DynamoTable, bucket: str, moto_endpoint: str, repair: RepairFunction, tmp_path: Path
) -> None:
    table.put(9)
    failures = archive(table, [(0, 2), (3, 5), (6, 8)], f"s3://{bucket}/archive", tmp_path)
    source, to = f"s3://{bucket}/archive", f"lambda:{repair.name}"

    code, summary = redrive(source, "--to", to)
    assert code == 0
    assert summary["totals"]["replayed"] == 3 and summary["totals"]["records_recovered"] == 9
    assert [r["delivered_to"] for r in summary["ranges"]] == [[to]] * 3
    expected = [s3_records(moto_endpoint, bucket, "archive", f) for f in failures]
    assert repair.calls() == expected  # exact records, in order, one invocation per range, ranges in order
    assert [seqs(call) for call in expected] == [seqs(table.stream_records()[i : i + 3]) for i in (0, 3, 6)]
    s3 = client("s3", moto_endpoint)
    for f in failures:
        key = f"archive/{range_path(f)}/redriven/{repair.name}.json"
        marker = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        assert (marker["target"], marker["records"], marker["range"]["range_id"]) == (to, 3, f.range_id)
        assert marker["forced"] is False

    code, summary = redrive(source, "--to", to)  # a rerun: nothing left to do
    assert code == 0 and len(repair.calls()) == 3
    assert all(
        r["outcome"] == "skipped" and r["reason"].startswith("already re-driven") and not r["delivered_to"]
        for r in summary["ranges"]
    )

    code, summary = redrive(source, "--to", to, "--force")
    assert code == 0 and repair.calls() == expected + expected
    assert all(f"{to}: an earlier marker was kept" in r["notes"] for r in summary["ranges"])
    key = f"archive/{range_path(failures[0])}/redriven/{repair.name}.json"
    assert json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())["forced"] is False  # create-only


def test_a_rerun_after_a_failure_redrives_only_what_had_not_succeeded(
    table: DynamoTable, ministack: Ministack, lambda_endpoint: str, tmp_path: Path
) -> None:
    repair = RepairFunction(ministack, FAIL_ON="poison")
    for i in range(10):  # five ranges of two records; the third range holds a record the function fails on
        table.put(1, start=i, payload="poison" if i == 5 else "plain")
    root = tmp_path / "archive"
    failures = archive(table, [(i, i + 1) for i in range(0, 10, 2)], f"file:{root}", tmp_path)
    stream = seqs(table.stream_records())
    ranges = [stream[i : i + 2] for i in range(0, 10, 2)]
    to = f"lambda:{repair.name}"

    code, summary = redrive(f"file:{root}", "--to", to, "--invoke-retries", "0")
    assert code == 1
    assert [r["outcome"] for r in summary["ranges"]] == [
        "replayed",
        "replayed",
        "retry",
        "replayed",
        "replayed",
    ]
    assert "function error" in summary["ranges"][2]["reason"]
    assert [seqs(c) for c in repair.calls()] == ranges  # the failing range did not stop the others
    assert [markers(root, f) for f in failures] == [[f"{repair.name}.json"]] * 2 + [[]] + [
        [f"{repair.name}.json"]
    ] * 2

    repair.configure()  # the bug is fixed
    code, summary = redrive(f"file:{root}", "--to", to)
    assert code == 0
    assert [seqs(c) for c in repair.calls()] == [*ranges, ranges[2]]  # only the range that had failed
    assert [bool(r["delivered_to"]) for r in summary["ranges"]] == [False, False, True, False, False]
    assert all(markers(root, f) == [f"{repair.name}.json"] for f in failures)


def test_each_function_keeps_its_own_marker(
    table: DynamoTable, ministack: Ministack, lambda_endpoint: str, tmp_path: Path
) -> None:
    good, bad = RepairFunction(ministack), RepairFunction(ministack, FAIL_FIRST="99")
    table.put(3)
    root = tmp_path / "archive"
    (failure,) = archive(table, [(0, 2)], f"file:{root}", tmp_path)
    args = ("--to", f"lambda:{good.name}", "--to", f"lambda:{bad.name}", "--invoke-retries", "0")
    code, summary = redrive(f"file:{root}", *args)
    assert code == 1
    assert summary["ranges"][0]["outcome"] == "retry"
    assert summary["ranges"][0]["delivered_to"] == [f"lambda:{good.name}"]
    assert markers(root, failure) == [f"{good.name}.json"]
    bad.configure()
    code, _ = redrive(f"file:{root}", *args)
    assert code == 0
    assert len(good.calls()) == 1 and len(bad.calls()) == 2
    assert good.calls()[0] == bad.calls()[1]
    assert markers(root, failure) == sorted([f"{good.name}.json", f"{bad.name}.json"])


def test_range_id_stream_and_arrival_filters(
    moto_endpoint: str, repair: RepairFunction, tmp_path: Path, bucket: str
) -> None:
    one, two = DynamoTable(moto_endpoint), DynamoTable(moto_endpoint)
    one.put(4)
    two.put(4)
    source = f"s3://{bucket}/a"
    jan = archive(one, [(0, 1)], source, tmp_path, approximateArrivalOfFirstRecord="2024-01-10T00:00:00Z")
    feb = archive(one, [(2, 3)], source, tmp_path, approximateArrivalOfFirstRecord="2024-02-10T00:00:00Z")
    other = archive(two, [(0, 3)], source, tmp_path, approximateArrivalOfFirstRecord="2024-03-10T00:00:00Z")
    to = ("--to", f"lambda:{repair.name}")

    def selected(*args: str) -> list[str]:
        code, summary = redrive(source, *to, "--dry-run", *args)
        assert code == 0
        assert all(
            r["outcome"] == "planned" and r["reason"].startswith("would re-drive") for r in summary["ranges"]
        )
        return sorted(r["range"]["range_id"] for r in summary["ranges"])

    def ids(*failures: Failure) -> list[str]:
        return sorted(f.range_id for f in failures)

    assert selected() == ids(*jan, *feb, *other)
    assert selected("--range-id", feb[0].range_id) == ids(*feb)
    assert selected("--stream-arn", two.stream_arn) == ids(*other)
    assert selected("--stream-arn", f"*table/{one.name}/*") == ids(*jan, *feb)
    assert selected("--since", "2024-01-15") == ids(*feb, *other)
    assert selected("--since", "2024-01-15", "--until", "2024-03-01T00:00:00Z") == ids(*feb)
    keys = [o["Key"] for o in client("s3", moto_endpoint).list_objects_v2(Bucket=bucket)["Contents"]]
    assert (
        not [k for k in keys if "/redriven/" in k] and repair.calls() == []
    )  # a dry run invokes and writes nothing

    code, _ = redrive(source, *to, "--range-id", feb[0].range_id)
    assert code == 0
    assert repair.calls() == [s3_records(moto_endpoint, bucket, "a", feb[0])]


def test_partial_and_expired_ranges_redrive_what_the_archive_holds(
    table: DynamoTable, repair: RepairFunction, tmp_path: Path
) -> None:
    table.put(4)
    stream = table.stream_records()
    (partial,) = parse_message(table.invocation_record(0, 3, stream))
    (expired,) = parse_message(
        table.invocation_record(1, 2, stream, shardId="shardId-00000000000000000000-00000gone")
    )
    root = tmp_path / "archive"

    async def lose_records() -> list[str]:
        """The archive a run that lost records to retention would have left."""
        async with Clients() as clients:
            read = await Readers(clients).for_failure(partial).read(partial)
        sequence = [r.sequence_number for r in read.records]
        sink = FileSink(root)
        await sink.deliver(partial, ReadResult(read.records[:2], (Gap(sequence[2], sequence[3], "trimmed"),)))
        await sink.deliver(
            expired, ReadResult((), (Gap(expired.start_sequence, expired.end_sequence, "trimmed"),))
        )
        return sequence

    sequence = asyncio.run(lose_records())

    code, summary = redrive(f"file:{root}", "--to", f"lambda:{repair.name}")
    assert code == 1
    by_id = {r["range"]["range_id"]: r for r in summary["ranges"]}
    assert by_id[partial.range_id]["outcome"] == "partial" and by_id[partial.range_id]["recovered"] == 2
    assert by_id[partial.range_id]["report"] == str(folder(root, partial) / "loss-report.json")
    assert by_id[partial.range_id]["missing"] == [{"first_sequence": sequence[2], "last_sequence": sequence[3], "reason": "trimmed"}]  # fmt: skip
    assert by_id[expired.range_id]["outcome"] == "expired" and by_id[expired.range_id]["delivered_to"] == []
    assert [seqs(c) for c in repair.calls()] == [sequence[:2]]
    assert markers(root, partial) == [f"{repair.name}.json"] and markers(root, expired) == []


def test_a_damaged_archive_is_rejected_and_nothing_is_invoked(
    table: DynamoTable, repair: RepairFunction, tmp_path: Path
) -> None:
    table.put(6)
    root = tmp_path / "archive"
    good, bad_records, bad_manifest = archive(table, [(0, 1), (2, 3), (4, 5)], f"file:{root}", tmp_path)
    (folder(root, bad_records) / "records.jsonl.gz").write_bytes(b"not gzip")
    (folder(root, bad_manifest) / "invocation.json").write_bytes(b"{")
    misplaced = root / "dynamodb" / "elsewhere" / "invocation.json"  # a manifest outside its range's folder
    misplaced.parent.mkdir(parents=True)
    misplaced.write_bytes((folder(root, good) / "invocation.json").read_bytes())

    code, summary = redrive(f"file:{root}", "--to", f"lambda:{repair.name}")
    assert code == 1
    reasons = sorted((r["outcome"], r["reason"]) for r in summary["ranges"])
    assert [outcome for outcome, _ in reasons] == ["rejected", "rejected", "rejected", "replayed"]
    assert any(
        "damaged: the records object does not match its manifest's SHA-256" in reason for _, reason in reasons
    )
    assert any("bad manifest: not JSON" in reason for _, reason in reasons)
    assert any("not of its own folder" in reason for _, reason in reasons)
    assert [seqs(c) for c in repair.calls()] == [seqs(table.stream_records()[0:2])]


@pytest.mark.parametrize(
    "args",
    [
        ["--to", "s3://bucket/x"],
        [],
        ["--to", "lambda:ok", "--since", "last tuesday"],
        ["--to", "lambda:ok", "--stream-arn", "not-an-arn"],
        ["--to", "lambda:bad/name"],
        ["--to", "lambda:ok", "--manifest-key", "not-a-key"],
    ],
)
def test_bad_options_exit_2(args: list[str], tmp_path: Path) -> None:
    result = run("redrive", "--from", f"file:{tmp_path}", *args)
    assert result.exit_code == 2
    assert "error:" in result.output


@pytest.mark.parametrize("source", ["s3://no-such-bucket-here/x", "file:/no/such/dir", "http://x"])
def test_an_archive_that_is_not_there_exits_2(source: str) -> None:
    result = run("redrive", "--from", source, "--to", "lambda:ok")
    assert result.exit_code == 2
    assert "--from" in result.output


def test_selection_and_manifest_helpers(table: DynamoTable, tmp_path: Path) -> None:
    assert parse_time("2024-03-08", "--since").tzinfo is not None
    assert Selection(stream_arns=(table.stream_arn,)).folders() != [""]
    assert Selection(stream_arns=("*",)).folders() == [""]
    table.put(2)
    root = tmp_path / "archive"
    (failure,) = archive(table, [(0, 1)], f"file:{root}", tmp_path)
    manifest = (folder(root, failure) / "invocation.json").read_bytes()
    found = archived_range(range_path(failure), manifest)
    assert found.failure == failure and found.count == 2 and not found.gaps
    with pytest.raises(ValueError, match="range_id"):
        doc = json.loads(manifest)
        doc["range"]["range_id"] = "0" * 32
        archived_range(range_path(failure), json.dumps(doc).encode())


# ---- #21 points 3, 6 and 11, #22 point 5: redrive trusts what it should, within its deadlines


def test_redrive_honours_allow_stream_and_denies_by_default(
    table: DynamoTable, repair: RepairFunction, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table.put(2)
    root = tmp_path / "archive"
    archive(table, [(0, 1)], f"file:{root}", tmp_path)
    monkeypatch.delenv("REPLAYER_ALLOW_STREAMS")
    to = ("--to", f"lambda:{repair.name}")

    for dry in ((), ("--dry-run",)):  # none allowed: a set-up mistake, one line, exit 2
        refused = run("redrive", "--from", f"file:{root}", *to, *dry)
        assert refused.exit_code == 2
        assert (
            refused.output.count("\n") == 1 and "--allow-stream (or REPLAYER_ALLOW_STREAMS)" in refused.output
        )
    for dry in ((), ("--dry-run",)):
        code, summary = redrive(f"file:{root}", *to, "--allow-stream", "*other*", *dry)
        assert code == 1
        (outcome,) = summary["ranges"]
        assert outcome["outcome"] == "rejected" and "it is not in --allow-stream" in outcome["reason"]
    assert repair.calls() == [] and markers(root, parse_message(table.invocation_record(0, 1))[0]) == []

    code, summary = redrive(f"file:{root}", *to, "--allow-stream", table.stream_arn)
    assert code == 0 and summary["ranges"][0]["outcome"] == "replayed" and len(repair.calls()) == 1


def test_redrive_show_prints_what_would_be_sent(table: DynamoTable, tmp_path: Path) -> None:
    table.put(3)
    root = tmp_path / "archive"
    (failure,) = archive(table, [(0, 2)], f"file:{root}", tmp_path)
    result = run(
        "redrive", "--from", f"file:{root}", "--to", "lambda:nobody", "--dry-run", "--show", "--json",
        "--no-preflight",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    shown = [json.loads(line) for line in result.stdout.splitlines()]
    assert seqs(shown) == seqs(table.stream_records())
    report = json.loads(result.stderr[result.stderr.index("{\n") :])
    assert (
        report["ranges"][0]["outcome"] == "planned" and "would send 3 of 3" in report["ranges"][0]["reason"]
    )
    assert markers(root, failure) == []


def test_a_dry_run_rejects_a_damaged_folder_as_the_real_run_does(
    table: DynamoTable, repair: RepairFunction, tmp_path: Path
) -> None:
    table.put(4)
    root = tmp_path / "archive"
    good, bad = archive(table, [(0, 1), (2, 3)], f"file:{root}", tmp_path)
    body = (folder(root, bad) / "records.jsonl.gz").read_bytes()
    (folder(root, bad) / "records.jsonl.gz").write_bytes(
        gzip.compress(gzip.decompress(body).replace(b"item", b"evil"))
    )
    to = ("--to", f"lambda:{repair.name}")

    code, planned = redrive(f"file:{root}", *to, "--dry-run")
    code_real, done = redrive(f"file:{root}", *to)
    for summary in (planned, done):
        by_id = {r["range"]["range_id"]: r for r in summary["ranges"]}
        assert by_id[bad.range_id]["outcome"] == "rejected"
        assert (
            "damaged: the records object does not match its manifest's SHA-256"
            in by_id[bad.range_id]["reason"]
        )
        assert str(folder(root, bad) / "records.jsonl.gz") in by_id[bad.range_id]["reason"]  # the full path
    assert {r["range"]["range_id"]: r["outcome"] for r in planned["ranges"]}[good.range_id] == "planned"
    assert code == code_real == 1
    assert [seqs(c) for c in repair.calls()] == [seqs(table.stream_records()[0:2])]


def test_with_a_manifest_key_redrive_refuses_what_replayer_did_not_write(
    table: DynamoTable, repair: RepairFunction, tmp_path: Path, moto_endpoint: str
) -> None:
    key = client("kms", moto_endpoint).create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")
    key_id = key["KeyMetadata"]["KeyId"]
    table.put(4)
    root = tmp_path / "archive"
    stream = table.stream_records()
    records = [table.invocation_record(0, 1, stream), table.invocation_record(2, 3, stream)]
    path = tmp_path / "ranges.json"
    path.write_text(json.dumps(records[:1]))
    assert run("replay", str(path), "--to", f"file:{root}", "--manifest-key", key_id).exit_code == 0
    path.write_text(json.dumps(records[1:]))
    assert run("replay", str(path), "--to", f"file:{root}").exit_code == 0  # as a hand-made folder would be
    signed, unsigned = (parse_message(r)[0] for r in records)
    to = ("--to", f"lambda:{repair.name}")

    code, summary = redrive(f"file:{root}", *to, "--manifest-key", key_id)
    assert code == 1
    outcomes = {r["range"]["range_id"]: r for r in summary["ranges"]}  # the range is named
    assert outcomes[signed.range_id]["outcome"] == "replayed"
    assert outcomes[unsigned.range_id]["outcome"] == "rejected"
    assert (
        f"carries no MAC, and --manifest-key {key_id} is configured" in outcomes[unsigned.range_id]["reason"]
    )
    assert [seqs(c) for c in repair.calls()] == [seqs(stream[0:2])]

    doc = json.loads((folder(root, signed) / "invocation.json").read_bytes())
    doc["archived"]["notes"] = ["edited after signing"]
    (folder(root, signed) / "invocation.json").write_bytes(json.dumps(doc).encode())
    code, summary = redrive(f"file:{root}", *to, "--manifest-key", key_id, "--force")
    assert all(r["outcome"] == "rejected" for r in summary["ranges"])
    assert any("its MAC is not valid" in r["reason"] for r in summary["ranges"])
    assert len(repair.calls()) == 1
    code, summary = redrive(f"file:{root}", *to, "--manifest-key", key_id, "--range-id", signed.range_id)
    assert [r["range"]["range_id"] for r in summary["ranges"]] == [signed.range_id]  # selected ones only


def drip_records(proxy: FaultProxy, seconds: float) -> None:
    proxy.add(Rule(lambda r: r.method == "GET" and "records.jsonl.gz" in r.path, drip=seconds))


def test_redrive_ends_a_dripping_s3_body_within_the_call_deadline(
    table: DynamoTable, bucket: str, repair: RepairFunction, tmp_path: Path, proxy: FaultProxy
) -> None:
    table.put(2)
    archive(table, [(0, 1)], f"s3://{bucket}/archive", tmp_path)
    drip_records(proxy, 2.0)  # one byte every 2 s: each socket read is quick, the body never ends

    code, summary = redrive(f"s3://{bucket}/archive", "--to", f"lambda:{repair.name}", "--call-deadline", "3")
    assert code == 1
    (outcome,) = summary["ranges"]
    assert outcome["outcome"] == "retry"
    assert "records.jsonl.gz: the object did not arrive within the 3 s call deadline" in outcome["reason"]
    assert repair.calls() == []


def test_redrive_has_the_same_per_range_budget_as_replay(
    table: DynamoTable, bucket: str, repair: RepairFunction, tmp_path: Path, proxy: FaultProxy
) -> None:
    table.put(2)
    archive(table, [(0, 1)], f"s3://{bucket}/archive", tmp_path)
    drip_records(proxy, 1.0)

    code, summary = redrive(f"s3://{bucket}/archive", "--to", f"lambda:{repair.name}", "--range-budget", "2")
    assert code == 1
    (outcome,) = summary["ranges"]
    assert outcome["outcome"] == "retry" and "longer than its 2 s budget" in outcome["reason"]
    assert repair.calls() == []
