"""The archive package: a range is written consistently whatever earlier attempts left, and read back verified.

moto S3 over HTTP, with the fault proxy to fail the manifest write and to trim records
between attempts; the file store on a real directory.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from replayer.allow import AllowList
from replayer.archive.layout import LOSS_REPORT, MANIFEST, RECORDS, conflict_records, range_path
from replayer.archive.manifest import archived_range, fingerprint, pack_records, sha256
from replayer.archive.read import Damaged, read_records
from replayer.archive.store import FileStore, S3Store, write_once
from replayer.aws import Clients
from replayer.cli import app
from replayer.core import Replayer
from replayer.model import Failure, Outcome, OutcomeKind, RecordPage, StreamRecord
from replayer.parse import parse_record
from replayer.settle import Action, decide
from replayer.sinks import sink_from_uri
from tests.support.aws import DynamoTable, client, json_objects, make_queue, queue_counts, send
from tests.support.faultproxy import FaultProxy, Request, Rule


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
