"""Knowing the event source mapping: found once, cached, noted in the archive, its filter re-applied.

The end-to-end case runs in ministack: a mapping with FilterCriteria fails a batch whose
sequence range also spans records the filter excluded; the repair function must receive
exactly the records the filter admits, and the archive every record of the range.
"""

from __future__ import annotations

import base64
import gzip
import json
import time
from pathlib import Path
from typing import Any

import pytest

from replayer.allow import AllowList
from replayer.aws import Clients
from replayer.core import Replayer
from replayer.mappings import MappingFinder, esm_uuid_from_key, from_pipe
from replayer.model import Failure, Origin, OutcomeKind, SourceMapping, StreamKind
from replayer.parse import parse_message
from replayer.sinks import FileSink, SinkOptions, sink_from_uri
from tests.support.aws import create_stream_table, unique
from tests.support.faultproxy import FaultProxy, Rule
from tests.support.ministack import LAMBDAS, Ministack, RepairFunction

ANY_STREAM = AllowList.of(["*"])  # deny by default: these tests read any stream

FUNCTION = "arn:aws:lambda:us-east-1:123456789012:function:consumer"
STREAM = "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2024-01-01T00:00:00.000"
ORDERS_ONLY = '{"dynamodb": {"NewImage": {"kind": {"S": ["order"]}}}}'


def failure(**changes: Any) -> Failure:
    fields: dict[str, Any] = {
        "kind": StreamKind.DYNAMODB,
        "stream_arn": STREAM,
        "shard_id": "shardId-1",
        "start_sequence": "100",
        "end_sequence": "200",
        "source_arn": FUNCTION,
    }
    return Failure(**(fields | changes))


def test_the_uuid_in_an_s3_destination_key() -> None:
    key = "aws/lambda/a1b2c3d4-5678-90ab-cdef-11111EXAMPLE/shardId-000000000000/2024/01/02/x.json"
    assert esm_uuid_from_key(key) is None  # not a UUID: EXAMPLE is not hex
    key = "prefix/aws/lambda/A1B2C3D4-5678-90AB-CDEF-111112222333/shardId-000000000000/2024/01/02/2024-01-02T03.04.05-uuid"
    assert esm_uuid_from_key(key) == "a1b2c3d4-5678-90ab-cdef-111112222333"
    assert esm_uuid_from_key("somewhere/else.json") is None


def test_a_pipe_is_read_from_describe_pipe() -> None:
    pipe = {
        "Arn": "arn:aws:pipes:us-east-1:123456789012:pipe/orders",
        "CurrentState": "RUNNING",
        "SourceParameters": {
            "FilterCriteria": {"Filters": [{"Pattern": ORDERS_ONLY}]},
            "DynamoDBStreamParameters": {"BatchSize": 7, "StartingPosition": "LATEST"},
        },
    }
    found = from_pipe(pipe)
    assert (found.found, found.kind, found.filters, found.batch_size, found.state) == (
        True,
        "pipe",
        (ORDERS_ONLY,),
        7,
        "RUNNING",
    )


async def test_not_permitted_falls_back_once_and_is_cached(proxy: FaultProxy) -> None:
    rule = proxy.add(
        Rule(
            lambda r: "event-source-mappings" in r.path, reply=aws_lambda_error(403, "AccessDeniedException")
        )
    )
    async with Clients() as clients:
        finder = MappingFinder(clients)
        first = await finder.find(failure())
        second = await finder.find(failure(start_sequence="300", end_sequence="400"))
    assert first is not None and second == first
    assert not first.found and "not permitted" in first.note and "unfiltered" in first.note
    assert rule.hits == 1  # once per process for this function and stream


async def test_no_mapping_found_in_the_emulator(moto_endpoint: str) -> None:
    async with Clients() as clients:
        found = await MappingFinder(clients).find(failure())
    assert found is not None and not found.found and "no event source mapping" in found.note


async def test_a_range_given_by_hand_has_no_mapping(moto_endpoint: str) -> None:
    async with Clients() as clients:
        assert await MappingFinder(clients).find(failure(origin=Origin.MANUAL, source_arn=None)) is None


async def test_throttling_is_not_cached_and_the_range_is_retried(proxy: FaultProxy, bucket: str) -> None:
    proxy.add(
        Rule(
            lambda r: "event-source-mappings" in r.path,
            reply=aws_lambda_error(429, "TooManyRequestsException"),
        )
    )
    async with Clients(max_attempts=1) as clients:
        replayer = Replayer(clients, [sink_from_uri(f"s3://{bucket}", clients)], allow=ANY_STREAM)
        outcome = await replayer.replay(failure())
    assert outcome.kind is OutcomeKind.RETRY and "event source mapping" in outcome.reason


def aws_lambda_error(status: int, code: str) -> tuple[int, dict[str, str], bytes]:
    """A Lambda (REST-JSON) error answer."""
    body = json.dumps({"Type": "User", "message": code}).encode()
    return status, {"Content-Type": "application/json", "x-amzn-ErrorType": code}, body


# ---------------------------------------------------------------------------- end to end


class FilteredConsumer:
    """A table in ministack whose consumer mapping has a filter, fails, and reports to a queue."""

    def __init__(self, ms: Ministack, calls: Path) -> None:
        self.ms = ms
        tag = unique("f")
        self.ddb, self.sqs, self.lam = ms.client("dynamodb"), ms.client("sqs"), ms.client("lambda")
        self.table = f"orders-{tag}"
        self.stream_arn: str = create_stream_table(self.ddb, self.table)["LatestStreamArn"]
        self.queue = self.sqs.create_queue(QueueName=f"failures-{tag}")["QueueUrl"]
        queue_arn = self.sqs.get_queue_attributes(QueueUrl=self.queue, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        consumer = ms.deploy(
            f"consumer-{tag}", LAMBDAS / "stream_consumer", "handler.handler", {"CALLS_DIR": str(calls)}
        )
        self.kinds = ["order", "noise", "order", "noise", "order", "noise"]
        for i, kind in enumerate(self.kinds):
            item: dict[str, Any] = {"pk": {"S": f"item-{i}"}, "kind": {"S": kind}}
            if i == 2:
                item["poison"] = {"BOOL": True}
            self.ddb.put_item(TableName=self.table, Item=item)
        self.uuid: str = self.lam.create_event_source_mapping(
            EventSourceArn=self.stream_arn,
            FunctionName=consumer,
            StartingPosition="TRIM_HORIZON",
            BatchSize=10,
            MaximumRetryAttempts=0,
            MaximumRecordAgeInSeconds=1,  # ministack gives a batch up only on age
            FilterCriteria={"Filters": [{"Pattern": ORDERS_ONLY}]},
            DestinationConfig={"OnFailure": {"Destination": queue_arn}},
        )["UUID"]

    def invocation_record(self) -> str:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            got = self.sqs.receive_message(QueueUrl=self.queue, WaitTimeSeconds=1).get("Messages", [])
            if got:
                body: str = got[0]["Body"]
                return body
        raise AssertionError("the mapping never reported a failed batch")


@pytest.fixture
def on_ministack(ministack: Ministack, lambda_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Ministack:
    """Every replayer call goes to ministack (streams, Lambda)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", ministack.endpoint)
    return ministack


async def test_the_repair_function_receives_exactly_what_the_filter_admits(
    on_ministack: Ministack, repair: RepairFunction, tmp_path: Path
) -> None:
    source = FilteredConsumer(on_ministack, tmp_path)
    (failed,) = parse_message(source.invocation_record())
    archive = tmp_path / "archive"
    unfiltered = RepairFunction(on_ministack)
    async with Clients() as clients:
        sinks = [
            FileSink(archive),
            sink_from_uri(f"lambda:{repair.name}", clients),
            sink_from_uri(f"lambda:{unfiltered.name}", clients, SinkOptions(no_filter=True)),
        ]
        outcome = await Replayer(clients, sinks, allow=ANY_STREAM).replay(failed)
    on_ministack.client("lambda").delete_event_source_mapping(UUID=source.uuid)
    assert outcome.kind is OutcomeKind.REPLAYED, outcome.describe()
    mapping = outcome.failure.mapping if outcome.failure else None
    assert mapping is not None and mapping.found
    assert (mapping.uuid, mapping.filters, mapping.batch_size) == (source.uuid, (ORDERS_ONLY,), 10)
    assert mapping.state

    def keys(records: list[dict[str, Any]]) -> list[str]:
        return [r["dynamodb"]["Keys"]["pk"]["S"] for r in records]

    # the range spans the noise between the orders; the function had seen only the orders
    assert keys(repair.received()) == ["item-0", "item-2", "item-4"]
    # ministack's own ESM filter (an emulator's implementation of the rules) delivered the same
    consumer = [
        r for path in sorted(tmp_path.glob("*.json")) for r in json.loads(path.read_text())["records"]
    ]
    assert sorted(set(keys(consumer))) == ["item-0", "item-2", "item-4"]
    assert keys(unfiltered.received()) == ["item-0", "item-1", "item-2", "item-3", "item-4"]
    (manifest_path,) = archive.rglob("invocation.json")
    manifest = json.loads(manifest_path.read_text())
    assert manifest["range"]["mapping"]["filters"] == [ORDERS_ONLY]
    assert manifest["range"]["mapping"]["uuid"] == source.uuid
    lines = gzip.decompress((manifest_path.parent / "records.jsonl.gz").read_bytes()).splitlines()
    assert keys([json.loads(line) for line in lines]) == ["item-0", "item-1", "item-2", "item-3", "item-4"]


def test_kinesis_data_filters_through_the_lambda_sink_shape() -> None:
    """The sink's selection for Kinesis goes through the same rules (data decoded from base64)."""
    from replayer.filtering import criteria_for
    from replayer.model import StreamRecord

    def record(seq: int, data: dict[str, Any]) -> StreamRecord:
        doc = {
            "kinesis": {
                "sequenceNumber": str(seq),
                "data": base64.b64encode(json.dumps(data).encode()).decode(),
            }
        }
        return StreamRecord(str(seq), json.dumps(doc).encode())

    records = [record(1, {"type": "buy"}), record(2, {"type": "sell"}), record(3, {"type": "buy"})]
    kept = criteria_for(('{"data": {"type": ["buy"]}}',)).select(StreamKind.KINESIS, records)
    assert [r.sequence_number for r in kept] == ["1", "3"]


def test_the_manifest_note_reads_back() -> None:
    noted = from_pipe({"Arn": "arn:aws:pipes:us-east-1:123456789012:pipe/p", "SourceParameters": {}})
    assert SourceMapping.read_back(noted.describe()) == noted
    found = failure(mapping=noted)
    assert found.describe()["mapping"]["kind"] == "pipe"
    assert SourceMapping.read_back(None) is None and SourceMapping.read_back({"found": "yes"}) is None
