"""The archive package: a range is written consistently whatever earlier attempts left, and read back verified.

moto S3 over HTTP, with the fault proxy to fail the manifest write and to trim records
between attempts; the file store on a real directory.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import json
import os
import stat
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from replayer.allow import AllowList
from replayer.archive.layout import (
    LOSS_REPORT,
    MANIFEST,
    RECORDS,
    conflict_records,
    legacy_range_path,
    range_path,
    redrive_marker,
    safe_segment,
)
from replayer.archive.manifest import (
    archived_range,
    fingerprint,
    manifest_document,
    pack_records,
    read_records_object,
    sha256,
)
from replayer.archive.read import Damaged, find_ranges, read_records
from replayer.archive.store import FileStore, S3Store, TooLarge, write_once
from replayer.aws import Clients
from replayer.cli import app
from replayer.core import Replayer
from replayer.model import Failure, Outcome, OutcomeKind, RecordPage, StreamKind, StreamRecord
from replayer.parse import parse_record
from replayer.readers import ReadResult
from replayer.settle import Action, decide
from replayer.sinks import FileSink, SinkError, SinkOptions, sink_from_uri
from replayer.sources.archive import Selection
from tests.support.aws import DynamoTable, client, json_objects, make_queue, queue_counts, send
from tests.support.faultproxy import FaultProxy, Request, Rule, trimmed_iterators


def replay(failure: Failure, to: str) -> Outcome:
    async def run() -> Outcome:
        async with Clients() as clients:
            allow = AllowList.of(["*"])  # deny by default: this test reads any stream
            return await Replayer(clients, [sink_from_uri(to, clients)], allow=allow).replay(failure)

    return asyncio.run(run())


def s3_sink(bucket: str) -> str:
    return f"s3://{bucket}/archive"


def objects(endpoint: str, bucket: str, failure: Failure) -> dict[str, bytes]:
    s3 = client("s3", endpoint)
    folder = f"archive/{range_path(failure)}/"
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=folder).get("Contents", [])
    return {
        o["Key"][len(folder) :]: s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed
    }


def lines(body: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in gzip.decompress(body).splitlines()]


def fail_manifest_writes(proxy: FaultProxy) -> Rule:
    """Every PUT of a manifest fails (botocore's retries included): the range's last write never lands."""
    return proxy.add(
        Rule(
            lambda r: r.method == "PUT" and r.path.split("?")[0].endswith(f"/{MANIFEST}"),
            reply=(500, {"Content-Type": "application/xml"}, b"<Error><Code>InternalError</Code></Error>"),
        )
    )


def trim(proxy: FaultProxy, *sequence_numbers: str) -> Rule:
    """GetRecords answers without these records, as if retention had dropped them meanwhile."""

    def without(request: Request, body: Any) -> Any:
        body["Records"] = [
            r for r in body["Records"] if r["dynamodb"]["SequenceNumber"] not in sequence_numbers
        ]
        return body

    return proxy.add(Rule(lambda r: r.operation == "GetRecords", rewrite=without))


async def read_back(bucket: str, failure: Failure) -> tuple[int, int]:
    """What `redrive` would get from the archive: (records, gaps); raises Damaged when it refuses it."""
    async with Clients() as clients:
        store = S3Store(clients, bucket, "archive")
        manifest = await store.read(f"{range_path(failure)}/{MANIFEST}")
        assert manifest is not None
        archived = archived_range(range_path(failure), manifest)
        records = await read_records(store, archived)
        return len(records), len(archived.gaps)


def test_an_unvouched_records_object_holding_more_than_a_trimmed_retry_read_is_a_conflict_kept_beside(
    table: DynamoTable, bucket: str, proxy: FaultProxy, moto_endpoint: str
) -> None:
    table.put(3)
    stream = table.stream_records()
    failure = parse_record(table.invocation_record(0, 2, stream))
    fault = fail_manifest_writes(proxy)

    first = replay(failure, s3_sink(bucket))
    assert first.kind is OutcomeKind.RETRY and fault.hits >= 1
    earlier = objects(moto_endpoint, bucket, failure)
    assert set(earlier) == {RECORDS}  # the manifest never landed

    proxy.clear()
    trimmed = trim(
        proxy, stream[0]["dynamodb"]["SequenceNumber"]
    )  # retention takes the first record meanwhile
    second = replay(failure, s3_sink(bucket))
    assert trimmed.hits >= 1

    # Nothing vouches for the earlier object's extra record (no manifest): the archive does not adopt it.
    assert second.kind is OutcomeKind.CONFLICT and not second.settled
    stored = objects(moto_endpoint, bucket, failure)
    assert stored[RECORDS] == earlier[RECORDS]  # never overwritten
    (beside,) = set(stored) - {RECORDS}
    assert beside == conflict_records(sha256(stored[beside]))  # this attempt's records, kept beside
    assert len(lines(stored[beside])) == 2 and MANIFEST not in stored
    folder = f"s3://{bucket}/archive/{range_path(failure)}"
    assert f"{folder}/{RECORDS}: " in second.reason and f"{folder}/{beside}" in second.reason
    assert sha256(earlier[RECORDS]) in second.reason and sha256(stored[beside]) in second.reason
    assert "no manifest vouches for it" in second.reason


def test_a_retry_that_lost_more_adopts_the_vouched_archive_and_its_loss_report(
    table: DynamoTable, bucket: str, proxy: FaultProxy, moto_endpoint: str
) -> None:
    table.put(4)
    stream = table.stream_records()
    seq = [r["dynamodb"]["SequenceNumber"] for r in stream]
    failure = parse_record(table.invocation_record(0, 3, stream))
    trim(proxy, seq[0])
    first = replay(failure, s3_sink(bucket))
    assert first.kind is OutcomeKind.PARTIAL and first.recovered == 3
    assert set(objects(moto_endpoint, bucket, failure)) == {RECORDS, LOSS_REPORT, MANIFEST}

    proxy.clear()
    trim(proxy, seq[0], seq[1])  # one more record gone by the retry: the manifest vouches for it
    second = replay(failure, s3_sink(bucket))

    assert second.kind is OutcomeKind.PARTIAL and second.recovered == 3
    assert [(g.first, g.last) for g in second.gaps] == [(seq[0], str(int(seq[1]) - 1))]
    stored = objects(moto_endpoint, bucket, failure)
    manifest = json.loads(stored[MANIFEST])
    report = json.loads(stored[LOSS_REPORT])
    assert manifest["loss_report_sha256"] == sha256(stored[LOSS_REPORT])
    assert manifest["archived"]["missing"] == report["missing"]
    assert report["recovered"]["records"] == manifest["archived"]["records"] == 3
    assert asyncio.run(read_back(bucket, failure)) == (3, 1)


def test_other_content_for_the_same_range_is_a_conflict_quarantined_with_both_digests(
    table: DynamoTable, bucket: str, moto_endpoint: str
) -> None:
    table.put(2)
    failure = parse_record(table.invocation_record(0, 1))
    forged = json.dumps({"dynamodb": {"SequenceNumber": failure.start_sequence}, "forged": True}).encode()
    body = gzip.compress(forged + b"\n")
    key = f"archive/{range_path(failure)}/{RECORDS}"
    client("s3", moto_endpoint).put_object(Bucket=bucket, Key=key, Body=body)

    outcome = replay(failure, s3_sink(bucket))

    assert outcome.kind is OutcomeKind.CONFLICT
    assert sha256(body) in outcome.reason and "this attempt's" in outcome.reason
    assert not outcome.settled
    decision = decide([outcome], can_quarantine=True)
    assert decision.action is Action.QUARANTINE and sha256(body) in decision.reason
    assert decide([outcome], can_quarantine=False).action is Action.LEAVE  # never deleted
    assert MANIFEST not in objects(moto_endpoint, bucket, failure)  # nothing claims the range complete


def test_already_there_is_read_back_and_verified_never_assumed(
    table: DynamoTable, bucket: str, moto_endpoint: str
) -> None:
    table.put(2)
    failure = parse_record(table.invocation_record(0, 1))
    assert replay(failure, s3_sink(bucket)).kind is OutcomeKind.REPLAYED
    again = replay(failure, s3_sink(bucket))
    assert again.kind is OutcomeKind.REPLAYED and again.recovered == 2

    # Someone replaces the records object: the manifest's digest no longer matches.
    key = f"archive/{range_path(failure)}/{RECORDS}"
    stored = objects(moto_endpoint, bucket, failure)
    tampered = gzip.compress(gzip.decompress(stored[RECORDS]).replace(b'"Keys"', b'"keys"'))
    client("s3", moto_endpoint).put_object(Bucket=bucket, Key=key, Body=tampered)
    third = replay(failure, s3_sink(bucket))
    assert third.kind is OutcomeKind.CONFLICT and sha256(tampered) in third.reason
    with pytest.raises(Damaged, match="SHA-256"):
        asyncio.run(read_back(bucket, failure))


def test_a_range_that_covers_less_than_the_archive_is_replayed_from_the_archive(
    table: DynamoTable, tmp_path: Path, proxy: FaultProxy
) -> None:
    table.put(3)
    stream = table.stream_records()
    failure = parse_record(table.invocation_record(0, 2, stream))
    assert replay(failure, f"file:{tmp_path}").kind is OutcomeKind.REPLAYED
    trim(proxy, stream[0]["dynamodb"]["SequenceNumber"], stream[1]["dynamodb"]["SequenceNumber"])
    later = replay(failure, f"file:{tmp_path}")
    assert later.kind is OutcomeKind.REPLAYED and later.recovered == 3 and not later.gaps


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """What os.fsync was called on: "file" or "dir" (a spy on the OS call; the write itself is real)."""
    calls: list[str] = []
    real = os.fsync

    def spy(fd: int) -> None:
        calls.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    yield calls


def test_the_file_store_syncs_the_file_then_every_directory_it_made(
    tmp_path: Path, synced: list[str]
) -> None:
    assert write_once(tmp_path / "a" / "b" / "x.json", b"{}")
    # a/ and b/ made (their parents synced), the file synced, then its directory after the link
    assert synced == ["dir", "dir", "file", "dir"]
    synced.clear()
    assert not write_once(tmp_path / "a" / "b" / "x.json", b"[]")  # create-only: nothing linked, no dir sync
    assert synced == ["file"]


def test_the_file_store_is_the_same_archive(tmp_path: Path, table: DynamoTable) -> None:
    table.put(1)
    failure = parse_record(table.invocation_record(0, 0))
    assert replay(failure, f"file:{tmp_path}").kind is OutcomeKind.REPLAYED
    store = FileStore(tmp_path)
    manifest = store.path(f"{range_path(failure)}/{MANIFEST}").read_bytes()
    archived = archived_range(range_path(failure), manifest)
    assert archived.records_sha256 == sha256(store.path(f"{range_path(failure)}/{RECORDS}").read_bytes())
    assert archived.count == 1 and archived.first_sequence == archived.last_sequence == failure.start_sequence


def test_drain_quarantines_a_conflicting_range_with_both_digests_and_keeps_the_archive(
    table: DynamoTable, bucket: str, moto_endpoint: str
) -> None:
    table.put(2)
    record = table.invocation_record(0, 1)
    failure = parse_record(record)
    forged = gzip.compress(
        json.dumps({"dynamodb": {"SequenceNumber": failure.start_sequence}, "forged": True}).encode() + b"\n"
    )
    s3 = client("s3", moto_endpoint)
    s3.put_object(Bucket=bucket, Key=f"archive/{range_path(failure)}/{RECORDS}", Body=forged)
    queue = make_queue(moto_endpoint)
    send(moto_endpoint, queue, record)

    result = CliRunner().invoke(
        app,
        [
            "drain", "--queue", queue, "--to", f"s3://{bucket}/archive", "--quarantine", f"s3://{bucket}/q",
            "--allow-stream", table.stream_arn, "--wait-seconds", "1", "--json",
        ],
    )  # fmt: skip
    document = json.loads(result.stdout)
    assert document["messages"]["quarantined"] == 1 and document["totals"]["conflict"] == 1
    assert result.exit_code == 1
    (quarantined,) = json_objects(moto_endpoint, bucket, "q/").values()
    assert sha256(forged) in quarantined["reason"] and "this attempt's" in quarantined["reason"]
    assert queue_counts(moto_endpoint, queue) == (0, 0)
    stored = objects(moto_endpoint, bucket, failure)
    assert stored.pop(RECORDS) == forged  # never overwritten, never declared complete
    (beside,) = stored  # what this attempt read, kept beside it
    assert beside == conflict_records(sha256(stored[beside])) and len(lines(stored[beside])) == 2


@pytest.mark.parametrize("count", [0, 1, 1000, 2500])
def test_packed_records_fingerprint_each_record_as_given_whichever_way_it_comes(count: int) -> None:
    records = [
        StreamRecord(
            str(10**20 + i),
            b'{"invokeIdentityArn":"arn:r%d","n":%d}' % (i % 3, i) if i % 2 else b'{"n":%d}' % i,
        )
        for i in range(count)
    ]
    page = RecordPage([r.sequence_number for r in records], [r.json for r in records])
    as_records, as_page = pack_records([records]), pack_records([page[:1000], page[1000:]])
    assert as_records.body == as_page.body and as_records.count == as_page.count == count
    assert [json.loads(line) for line in gzip.decompress(as_page.body).splitlines()] == [
        json.loads(r.json) for r in records
    ]
    expected = {r.sequence_number: fingerprint(r) for r in records}
    assert dict(as_records.fingerprints) == dict(as_page.fingerprints) == expected
    assert not as_page.holds(as_records) and not as_records.holds(as_page)
    if count:  # one record read differently is named, whatever the identity it was archived with
        other = [*records[:-1], StreamRecord(records[-1].sequence_number, b'{"n":-1}')]
        assert pack_records([other]).holds(as_page) == [records[-1].sequence_number]


# ---- #21 point 2: the archive never vouches for what this attempt did not read


def plant(endpoint: str, bucket: str, failure: Failure, name: str, body: bytes) -> None:
    client("s3", endpoint).put_object(Bucket=bucket, Key=f"archive/{range_path(failure)}/{name}", Body=body)


def genuine_lines(failure: Failure, tmp_path: Path) -> list[bytes]:
    """The records of the range exactly as replayer archives them (read into a scratch archive)."""
    scratch = tmp_path / "scratch"
    assert replay(failure, f"file:{scratch}").kind is OutcomeKind.REPLAYED
    return gzip.decompress(
        FileStore(scratch).path(f"{range_path(failure)}/{RECORDS}").read_bytes()
    ).splitlines()


def read_range(table: DynamoTable, n: int, tmp_path: Path) -> tuple[Failure, list[str], list[bytes]]:
    """A range of `n` records put in the table: the failure, its sequence numbers, its archived lines."""
    table.put(n)
    stream = table.stream_records()
    failure = parse_record(table.invocation_record(0, n - 1, stream))
    return failure, [r["dynamodb"]["SequenceNumber"] for r in stream], genuine_lines(failure, tmp_path)


def forged_line(sequence_number: str) -> bytes:
    return json.dumps({"dynamodb": {"SequenceNumber": sequence_number}, "eventID": "forged"}).encode()


def with_key(failure: Failure, to: str, key: str | None) -> Outcome:
    async def run() -> Outcome:
        async with Clients() as clients:
            sink = sink_from_uri(to, clients, SinkOptions(manifest_key=key))
            return await Replayer(clients, [sink], allow=AllowList.of(["*"])).replay(failure)

    return asyncio.run(run())


def hmac_key(endpoint: str) -> str:
    kms = client("kms", endpoint)
    return str(kms.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]["Arn"])


def test_planted_records_for_a_range_the_stream_no_longer_holds_are_never_adopted(
    table: DynamoTable, bucket: str, proxy: FaultProxy, moto_endpoint: str
) -> None:
    table.put(2)
    first = int(table.stream_records()[0]["dynamodb"]["SequenceNumber"])
    # A range older than the oldest record left: the stream yields nothing of it, the read is empty.
    failure = parse_record(
        table.invocation_record(0, 0, startSequenceNumber=str(first - 30), endSequenceNumber=str(first - 10))
    )
    planted = gzip.compress(forged_line(str(first - 20)) + b"\n")
    plant(moto_endpoint, bucket, failure, RECORDS, planted)
    proxy.add(trimmed_iterators())

    outcome = replay(failure, s3_sink(bucket))

    assert outcome.kind is OutcomeKind.CONFLICT and sha256(planted) in outcome.reason
    assert "no manifest vouches for it" in outcome.reason
    assert objects(moto_endpoint, bucket, failure) == {RECORDS: planted}  # no manifest: redrive never sees it


def test_a_planted_superset_with_a_forged_record_between_genuine_ones_is_a_conflict(
    table: DynamoTable, bucket: str, proxy: FaultProxy, moto_endpoint: str, tmp_path: Path
) -> None:
    failure, seq, genuine = read_range(table, 3, tmp_path)
    planted = gzip.compress(b"\n".join([genuine[0], forged_line(seq[1]), genuine[2]]) + b"\n")
    plant(moto_endpoint, bucket, failure, RECORDS, planted)
    trim(proxy, seq[1])  # the stream holds no record between the two (sequence numbers are sparse)

    outcome = replay(failure, s3_sink(bucket))

    assert outcome.kind is OutcomeKind.CONFLICT
    assert f"holds 1 records the stream did not yield (first: {seq[1]})" in outcome.reason
    stored = objects(moto_endpoint, bucket, failure)
    assert MANIFEST not in stored and stored.pop(RECORDS) == planted
    (beside,) = stored
    assert beside == conflict_records(sha256(stored[beside])) and beside in outcome.reason


def test_an_object_holding_exactly_the_records_read_is_adopted_whatever_its_bytes(
    table: DynamoTable, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    table.put(2)
    failure = parse_record(table.invocation_record(0, 1))
    same = genuine_lines(failure, tmp_path)
    other_bytes = gzip.compress(b"\n".join(same) + b"\n", compresslevel=9)  # an earlier attempt's, say
    plant(moto_endpoint, bucket, failure, RECORDS, other_bytes)

    outcome = replay(failure, s3_sink(bucket))

    assert outcome.kind is OutcomeKind.REPLAYED and outcome.recovered == 2
    stored = objects(moto_endpoint, bucket, failure)
    assert set(stored) == {RECORDS, MANIFEST} and stored[RECORDS] == other_bytes
    assert json.loads(stored[MANIFEST])["records_sha256"] == sha256(other_bytes)


def vouching_manifest(failure: Failure, body: bytes) -> bytes:
    """A manifest written by hand that vouches for `body` (digest and count right, no MAC)."""
    return manifest_document(
        failure, read_records_object(body, failure), (), (), records_location="s3://somewhere"
    )


def test_without_a_key_a_vouching_manifest_is_trusted_with_a_key_only_a_valid_mac_is(
    table: DynamoTable, bucket: str, proxy: FaultProxy, moto_endpoint: str, tmp_path: Path
) -> None:
    failure, seq, genuine = read_range(table, 2, tmp_path)
    planted = gzip.compress(forged_line(seq[0]) + b"\n" + genuine[1] + b"\n")
    plant(moto_endpoint, bucket, failure, RECORDS, planted)
    plant(moto_endpoint, bucket, failure, MANIFEST, vouching_manifest(failure, planted))
    trim(proxy, seq[0])  # this read is short: only a manifest may vouch for the first record
    key = hmac_key(moto_endpoint)

    signed = with_key(failure, s3_sink(bucket), key)
    assert signed.kind is OutcomeKind.CONFLICT
    assert f"carries no MAC, and --manifest-key {key} is configured" in signed.reason

    # No key: the archive prefix is trusted storage (the templates make it so); what it holds is believed.
    trusted = with_key(failure, s3_sink(bucket), None)
    assert trusted.kind is OutcomeKind.REPLAYED and trusted.recovered == 2


def test_a_manifest_key_signs_what_replayer_writes_and_a_rerun_verifies_it(
    table: DynamoTable, bucket: str, moto_endpoint: str
) -> None:
    table.put(2)
    failure = parse_record(table.invocation_record(0, 1))
    key = hmac_key(moto_endpoint)
    first = with_key(failure, s3_sink(bucket), key)
    assert first.kind is OutcomeKind.REPLAYED
    manifest = json.loads(objects(moto_endpoint, bucket, failure)[MANIFEST])
    assert manifest["mac"]["algorithm"] == "HMAC_SHA_256" and key.endswith(manifest["mac"]["key_id"])
    again = with_key(failure, s3_sink(bucket), key)
    assert again.kind is OutcomeKind.REPLAYED  # verified, adopted

    other = hmac_key(moto_endpoint)  # a MAC of another key is no MAC of this one
    refused = with_key(failure, s3_sink(bucket), other)
    assert refused.kind is OutcomeKind.CONFLICT and f"its MAC is not valid for {other}" in refused.reason


# ---- #21 point 5: records objects are inflated as a stream, within a range's ceiling


def bomb(megabytes: int, unit: bytes = b" ") -> bytes:
    """Concatenated gzip members, each a MiB of `unit`: ~1 KB of object per MiB inflated."""
    return gzip.compress(unit * (1 << 20), compresslevel=9) * megabytes


def test_a_gzip_bomb_is_refused_with_its_reason_and_never_inflated_whole(
    table: DynamoTable, bucket: str, moto_endpoint: str
) -> None:
    table.put(1)
    failure = parse_record(table.invocation_record(0, 0))
    spaces = bomb(1024)  # 1 GiB of spaces in about 1 MB
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="longer than 16777216 bytes, a record's ceiling"):
            read_records_object(spaces, failure)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024 * 1024, peak  # a line's ceiling and a step, not the GiB
    with pytest.raises(ValueError, match="line 1 of the records object is empty"):
        read_records_object(bomb(300, b"\n"), failure)
    padding = " " * (
        15 << 20
    )  # records of 15 MiB each, in range and in order: the range's ceiling stops them
    big = b"".join(
        gzip.compress(
            b'{"dynamodb":{"SequenceNumber":"%d"},"pad":"%b"}\n' % (failure.start + i, padding.encode()), 1
        )
        for i in range(20)
    )
    with pytest.raises(ValueError, match="inflates to more than 268435456 bytes, a range's ceiling"):
        read_records_object(big, dataclasses.replace(failure, end_sequence=str(failure.start + 100)))

    plant(moto_endpoint, bucket, failure, RECORDS, spaces)
    outcome = replay(failure, s3_sink(bucket))
    assert outcome.kind is OutcomeKind.CONFLICT and "a record's ceiling" in outcome.reason


async def test_a_store_read_is_bounded(bucket: str, tmp_path: Path) -> None:
    async with Clients() as clients:
        store = S3Store(clients, bucket, "x")
        assert await store.create("a/big", b"x" * 2048)
        assert await store.read("a/big", limit=4096) == b"x" * 2048
        with pytest.raises(TooLarge, match="more than the 1024"):
            await store.read("a/big", limit=1024)
    files = FileStore(tmp_path)
    assert await files.create("a/big", b"x" * 2048)
    with pytest.raises(TooLarge, match="more than the 1024"):
        await files.read("a/big", limit=1024)


# ---- #21 point 9: the file archive stays inside its root and can hold every name AWS allows


def file_failure(table_name: str = "orders") -> Failure:
    return Failure(
        StreamKind.DYNAMODB,
        f"arn:aws:dynamodb:us-east-1:123456789012:table/{table_name}/stream/2024-01-02T03:04:05.678",
        "shardId-00000001573689847184-864758bb",
        "100",
        "101",
        batch_size=2,
        raw={"DDBStreamBatchInfo": {"startSequenceNumber": "100"}},
    )


def two_records() -> ReadResult:
    return ReadResult(
        tuple(
            StreamRecord(str(s), json.dumps({"dynamodb": {"SequenceNumber": str(s)}}).encode())
            for s in (100, 101)
        ),
        (),
    )


async def test_a_symlinked_folder_in_the_file_archive_is_never_written_through(tmp_path: Path) -> None:
    root, outside = tmp_path / "archive", tmp_path / "outside"
    outside.mkdir()
    failure = file_failure()
    shard_folder = root.joinpath(*range_path(failure).split("/")[:-1])
    shard_folder.parent.mkdir(parents=True)
    shard_folder.symlink_to(outside, target_is_directory=True)

    with pytest.raises(SinkError, match=r"Too many levels of symbolic links|Not a directory"):
        await FileSink(root).deliver(failure, two_records())
    assert not list(outside.iterdir())  # nothing written outside the root


async def test_a_symlinked_records_object_is_never_read(tmp_path: Path) -> None:
    root, secret = tmp_path / "archive", tmp_path / "secret.gz"
    secret.write_bytes(gzip.compress(b'{"dynamodb":{"SequenceNumber":"100"}}\n'))
    failure = file_failure()
    folder = root.joinpath(*range_path(failure).split("/"))
    folder.mkdir(parents=True)
    (folder / RECORDS).symlink_to(secret)

    with pytest.raises(SinkError, match="Too many levels of symbolic links") as caught:
        await FileSink(root).deliver(failure, two_records())
    assert sha256(secret.read_bytes()) not in str(caught.value)  # its digest never leaks
    assert await FileStore(root).keys() == []  # a link is neither listed nor followed


async def test_every_name_aws_allows_fits_the_file_archive_as_a_stable_hashed_segment(tmp_path: Path) -> None:
    longest = "." + "a" * 254  # a valid table name: 255 characters, starting with a dot
    failure = file_failure(longest)
    path = range_path(failure)
    segment = path.split("/")[3]
    assert (
        len(segment) <= 255 and "~" in segment and segment == range_path(file_failure(longest)).split("/")[3]
    )
    assert segment != range_path(file_failure("." + "a" * 253)).split("/")[3]

    delivery = await FileSink(tmp_path).deliver(failure, two_records())
    assert delivery.recovered == 2
    (found,), bad = await find_ranges(FileStore(tmp_path))
    assert not bad and found.failure.stream_arn == failure.stream_arn and found.folder == path


def test_the_layout_is_portable_and_an_archive_of_0_1_0_is_still_read(tmp_path: Path) -> None:
    failure = file_failure()
    path = range_path(failure)
    assert ":" not in path and "2024-01-02T03%3A04%3A05.678" in path
    assert safe_segment("CON") != "CON" and safe_segment("name.") == "name%2E"

    assert asyncio.run(FileSink(tmp_path).deliver(failure, two_records())).recovered == 2
    old = tmp_path.joinpath(*legacy_range_path(failure).split("/"))
    assert ":" in str(old.relative_to(tmp_path))
    old.parent.mkdir(parents=True)
    tmp_path.joinpath(*path.split("/")).rename(old)  # as 0.1.0 left it

    (found,), bad = asyncio.run(find_ranges(FileStore(tmp_path)))
    assert not bad and found.folder == legacy_range_path(failure) and found.count == 2
    assert len(asyncio.run(read_records(FileStore(tmp_path), found))) == 2
    folders = Selection(stream_arns=(failure.stream_arn,)).folders()  # `redrive --stream-arn ARN`
    assert [r.folder for r in asyncio.run(find_ranges(FileStore(tmp_path), folders))[0]] == [found.folder]
    assert redrive_marker("repair:live", legacy=True) == "redriven/repair:live.json"  # 0.1.0's markers count
    assert redrive_marker("repair:live") == "redriven/repair%3Alive.json"
