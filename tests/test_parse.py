"""replayer.parse: every sample record, every envelope, and a table of malformed inputs."""

from __future__ import annotations

import copy
import functools
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from replayer.errors import ParseError
from replayer.model import Failure, Origin, StreamKind
from replayer.parse import parse_document, parse_message, parse_record, s3_object_refs, sqs_messages
from replayer.parse._envelopes import MAX_ENVELOPE_DEPTH
from replayer.parse._json import MAX_TEXT_BYTES
from tests.support.events import EVENTS, event_text, load_event


def at(year: int, month: int, day: int, hour: int, minute: int, second: int, ms: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, ms * 1000, tzinfo=UTC)


DDB_ARN = "arn:aws:dynamodb:us-east-2:123456789012:table/mytable/stream/2019-11-14T00:04:06.388"
ORDERS_ARN = "arn:aws:dynamodb:eu-west-2:123456789012:table/orders/stream/2024-03-01T09:15:42.118"
KINESIS_ARN = "arn:aws:kinesis:us-east-2:123456789012:stream/mystream"
FUNCTION = "arn:aws:lambda:us-east-2:123456789012:function:myfunction"
PROJECTOR = "arn:aws:lambda:eu-west-2:123456789012:function:order-projector"
DDB_SHARD = "shardId-00000001573689847184-864758bb"

EXPECTED: dict[str, Failure] = {
    "ddb_esm_sqs_record.json": Failure(
        kind=StreamKind.DYNAMODB,
        stream_arn=DDB_ARN,
        shard_id=DDB_SHARD,
        start_sequence="800000000003126276362",
        end_sequence="800000000003126276362",
        batch_size=1,
        first_arrival=at(2019, 11, 14, 0, 13, 19),
        last_arrival=at(2019, 11, 14, 0, 13, 19),
        condition="RetryAttemptsExhausted",
        origin=Origin.LAMBDA_ESM,
        source_arn=FUNCTION,
        timestamp=at(2019, 11, 14, 0, 13, 49, 717),
    ),
    "ddb_esm_record_no_millis.json": Failure(
        kind=StreamKind.DYNAMODB,
        stream_arn=DDB_ARN,
        shard_id=DDB_SHARD,
        start_sequence="800000000003126276370",
        end_sequence="800000000003126276392",
        batch_size=3,
        first_arrival=at(2019, 11, 14, 0, 14, 2),
        last_arrival=at(2019, 11, 14, 0, 14, 5),
        condition="RetryAttemptsExhausted",
        origin=Origin.LAMBDA_ESM,
        source_arn=FUNCTION,
        timestamp=at(2019, 11, 14, 0, 14, 41),
    ),
    "ddb_esm_function_error_null.json": Failure(
        kind=StreamKind.DYNAMODB,
        stream_arn=DDB_ARN,
        shard_id=DDB_SHARD,
        start_sequence="800000000003126276401",
        end_sequence="800000000003126276455",
        batch_size=10,
        first_arrival=at(2019, 11, 14, 0, 20, 11, 32),
        last_arrival=at(2019, 11, 14, 0, 20, 12, 870),
        condition="RetryAttemptsExhausted",
        origin=Origin.LAMBDA_ESM,
        source_arn=FUNCTION,
        timestamp=at(2019, 11, 14, 0, 21, 3, 552),
    ),
    "ddb_esm_max_record_age.json": Failure(
        kind=StreamKind.DYNAMODB,
        stream_arn=DDB_ARN,
        shard_id=DDB_SHARD,
        start_sequence="800000000003126276500",
        end_sequence="800000000003126276512",
        batch_size=2,
        first_arrival=at(2019, 11, 14, 0, 30, 0, 100),
        last_arrival=at(2019, 11, 14, 0, 30, 0, 950),
        condition="MaxRecordAgeExceeded",
        origin=Origin.LAMBDA_ESM,
        source_arn=FUNCTION,
        timestamp=at(2019, 11, 14, 1, 30, 2, 4),
    ),
    "kinesis_esm_record.json": Failure(
        kind=StreamKind.KINESIS,
        stream_arn=KINESIS_ARN,
        shard_id="shardId-000000000001",
        start_sequence="49601189658422359378836298521827638475320189012309704722",
        end_sequence="49601189658422359378836298522902373528957594348623495186",
        batch_size=500,
        first_arrival=at(2019, 11, 14, 0, 38, 4, 835),
        last_arrival=at(2019, 11, 14, 0, 38, 5, 580),
        condition="RetryAttemptsExhausted",
        origin=Origin.LAMBDA_ESM,
        source_arn=FUNCTION,
        timestamp=at(2019, 11, 14, 0, 38, 6, 21),
    ),
    "kinesis_esm_executed_version_number.json": Failure(
        kind=StreamKind.KINESIS,
        stream_arn=KINESIS_ARN,
        shard_id="shardId-000000000006",
        start_sequence="49590338271490256608559692538361571095921575989136588898",
        end_sequence="49590338271490256608559692540925702759324208523137515618",
        batch_size=2,
        first_arrival=at(2018, 12, 17, 22, 10, 50, 987),
        last_arrival=at(2018, 12, 17, 22, 10, 51, 341),
        condition="RetryAttemptsExhausted",
        origin=Origin.LAMBDA_ESM,
        source_arn=f"{FUNCTION}:3",
        timestamp=at(2018, 12, 17, 22, 11, 2, 211),
    ),
    "pipes_ddb_dlq.json": Failure(
        kind=StreamKind.DYNAMODB,
        stream_arn="arn:aws:dynamodb:eu-west-2:123456789123:table/orders/stream/2024-01-02T10:20:30.456",
        shard_id="shardId-00000001709855999999-4c1b8e2d",
        start_sequence="300000000019873344521",
        end_sequence="300000000019873344529",
        batch_size=5,
        first_arrival=at(2024, 3, 7, 23, 59, 41),
        last_arrival=at(2024, 3, 7, 23, 59, 43),
        condition="RetryAttemptsExhausted",
        origin=Origin.PIPES,
        source_arn="arn:aws:pipes:eu-west-2:123456789123:pipe/my-pipe",
        timestamp=at(2024, 3, 8, 0, 0, 0),
    ),
    "pipes_kinesis_dlq.json": Failure(
        kind=StreamKind.KINESIS,
        stream_arn="arn:aws:kinesis:eu-west-2:123456789123:stream/clickstream",
        shard_id="shardId-000000000003",
        start_sequence="49649393185372158457261357628384718233891203938471821362",
        end_sequence="49649393185372158457261357628389553284903287127105388594",
        batch_size=100,
        first_arrival=at(2024, 3, 8, 0, 4, 40, 118),
        last_arrival=at(2024, 3, 8, 0, 4, 41, 902),
        condition="RetryAttemptsExhausted",
        origin=Origin.PIPES,
        source_arn="arn:aws:pipes:eu-west-2:123456789123:pipe/clickstream-pipe",
        timestamp=at(2024, 3, 8, 0, 5, 12, 345),
    ),
    "s3_destination_ddb.json": Failure(
        kind=StreamKind.DYNAMODB,
        stream_arn=ORDERS_ARN,
        shard_id="shardId-00000001709370000000-9e7d1f0a",
        start_sequence="100000000061487261811",
        end_sequence="100000000061487261846",
        batch_size=2,
        first_arrival=at(2024, 3, 2, 9, 15, 41),
        last_arrival=at(2024, 3, 2, 9, 15, 44),
        condition="RetryAttemptsExhausted",
        origin=Origin.LAMBDA_ESM,
        source_arn=PROJECTOR,
        timestamp=at(2024, 3, 2, 9, 17, 12, 934),
    ),
    "s3_destination_kinesis_payload_object.json": Failure(
        kind=StreamKind.KINESIS,
        stream_arn="arn:aws:kinesis:us-east-2:123456789012:stream/lambda-stream",
        shard_id="shardId-000000000000",
        start_sequence="49590338271490256608559692538361571095921575989136588898",
        end_sequence="49590338271490256608559692540925702759324208523137515618",
        batch_size=2,
        first_arrival=at(2018, 12, 17, 22, 10, 50, 987),
        last_arrival=at(2018, 12, 17, 22, 10, 52, 21),
        condition="RetryAttemptsExhausted",
        origin=Origin.LAMBDA_ESM,
        source_arn="arn:aws:lambda:us-east-2:123456789012:function:stream-consumer",
        timestamp=at(2018, 12, 17, 22, 11, 30, 447),
    ),
}

SNS_NOTIFICATION_FAILURE = Failure(
    kind=StreamKind.DYNAMODB,
    stream_arn=ORDERS_ARN,
    shard_id="shardId-00000001712534400000-3f2a9b1c",
    start_sequence="200000000044120938471",
    end_sequence="200000000044120938522",
    batch_size=4,
    first_arrival=at(2024, 4, 8, 12, 0, 3, 211),
    last_arrival=at(2024, 4, 8, 12, 0, 4, 877),
    condition="RetryAttemptsExhausted",
    origin=Origin.LAMBDA_ESM,
    source_arn=PROJECTOR,
    timestamp=at(2024, 4, 8, 12, 2, 19, 640),
)


def _all_fields(failure: Failure) -> dict[str, Any]:
    return {name: getattr(failure, name) for name in Failure.__slots__}


# ---- every sample record


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_record_parses_to_expected_failure(name: str) -> None:
    record = load_event(name)
    failure = parse_record(record, payloads=True)
    assert failure == EXPECTED[name]
    assert failure.raw == record
    for stamp in (failure.timestamp, failure.first_arrival, failure.last_arrival):
        assert stamp is not None and stamp.utcoffset() == timedelta(0)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_record_as_message_text_bytes_and_document(name: str) -> None:
    text = event_text(name)
    assert parse_message(text, payloads=True) == [EXPECTED[name]]
    assert parse_message(text.encode(), payloads=True) == [EXPECTED[name]]
    assert parse_message(json.loads(text), payloads=True) == [EXPECTED[name]]
    assert parse_document(text, payloads=True) == [EXPECTED[name]]


def test_every_sample_file_is_covered() -> None:
    envelopes = {
        "sns_notification_ddb.json",
        "sns_lambda_event_ddb.json",
        "sqs_lambda_event_ddb.json",
        "sqs_lambda_event_sns_ddb.json",
        "s3_event_notification.json",
    }
    assert {p.name for p in EVENTS.glob("*.json")} == set(EXPECTED) | envelopes


def test_sequence_number_lengths_in_samples() -> None:
    for name, failure in EXPECTED.items():
        digits = 21 if failure.kind is StreamKind.DYNAMODB else 56
        assert len(failure.start_sequence) == len(failure.end_sequence) == digits, name
        assert failure.start <= failure.end


def test_wire_variants() -> None:
    assert load_event("ddb_esm_function_error_null.json")["responseContext"]["functionError"] is None
    assert load_event("kinesis_esm_executed_version_number.json")["responseContext"]["executedVersion"] == "3"
    assert parse_record(load_event("ddb_esm_max_record_age.json")).condition == "MaxRecordAgeExceeded"
    assert parse_record(load_event("ddb_esm_record_no_millis.json")).timestamp == at(2019, 11, 14, 0, 14, 41)


def test_s3_destination_payload_string_holds_ddb_records() -> None:
    failure = parse_record(load_event("s3_destination_ddb.json"), payloads=True)
    assert failure.payload is not None
    assert isinstance(failure.payload, tuple)
    assert len(failure.payload) == 2
    assert [r["dynamodb"]["SequenceNumber"] for r in failure.payload] == [
        "100000000061487261811",
        "100000000061487261846",
    ]
    assert [r["eventName"] for r in failure.payload] == ["INSERT", "MODIFY"]
    assert isinstance(failure.raw["payload"], str)  # raw keeps the wire form


def test_s3_destination_payload_object_holds_kinesis_records() -> None:
    failure = parse_record(load_event("s3_destination_kinesis_payload_object.json"), payloads=True)
    assert failure.payload is not None
    assert len(failure.payload) == 2
    assert failure.payload[0]["kinesis"]["sequenceNumber"] == failure.start_sequence
    assert failure.payload[1]["kinesis"]["sequenceNumber"] == failure.end_sequence


def test_records_without_payload_have_none() -> None:
    assert parse_record(load_event("ddb_esm_sqs_record.json")).payload is None
    assert parse_record(load_event("pipes_kinesis_dlq.json")).payload is None


def test_payload_record_count_need_not_equal_batch_size() -> None:
    record = load_event("s3_destination_ddb.json")
    record["DDBStreamBatchInfo"]["batchSize"] = (
        7  # the reader, not the parser, checks them against each other
    )
    failure = parse_record(record, payloads=True)
    assert failure.batch_size == 7
    assert failure.payload is not None and len(failure.payload) == 2


@pytest.mark.parametrize("name", ["s3_destination_ddb.json", "s3_destination_kinesis_payload_object.json"])
def test_a_payload_is_refused_unless_the_source_vouches_for_it(name: str) -> None:
    """Only S3 destination objects and operator-named files may bring records; a queue message never does."""
    text = event_text(name)
    for attempt in (
        lambda: parse_message(text),
        lambda: parse_document(text),
        lambda: parse_record(json.loads(text)),
    ):
        with pytest.raises(ParseError) as caught:
            attempt()
        assert caught.value.path.endswith(".payload") and "forged" in caught.value.reason
    # Inside an SQS or SNS envelope it is refused even from a trusted source: AWS never puts one there.
    sqs_event = {"Records": [{"eventSource": "aws:sqs", "messageId": "m", "body": text}]}
    with pytest.raises(ParseError, match="inline payload"):
        parse_message(sqs_event, payloads=True)
    notification = {"Type": "Notification", "MessageId": "n", "Message": text}
    with pytest.raises(ParseError, match="inline payload"):
        parse_message(notification, payloads=True)


def test_an_empty_trusted_payload_parses_and_is_left_to_the_reader() -> None:
    record = load_event("s3_destination_ddb.json")
    record["payload"] = '{"Records": []}'
    assert parse_record(record, payloads=True).payload == ()


# ---- quirks accepted


def test_optional_fields_absent_or_null() -> None:
    record = load_event("ddb_esm_sqs_record.json")
    info = record["DDBStreamBatchInfo"]
    del info["batchSize"], info["approximateArrivalOfFirstRecord"]
    info["approximateArrivalOfLastRecord"] = None
    del record["timestamp"], record["requestContext"]["condition"]
    record["requestContext"]["functionArn"] = None
    record["responseContext"] = {"statusCode": 200, "executedVersion": 3, "functionError": None}
    failure = parse_record(record)
    assert (failure.batch_size, failure.first_arrival, failure.last_arrival) == (None, None, None)
    assert (failure.timestamp, failure.condition, failure.source_arn) == (None, None, None)
    assert failure.start_sequence == "800000000003126276362"


def test_integer_sequence_numbers_become_strings() -> None:
    record = load_event("ddb_esm_sqs_record.json")
    record["DDBStreamBatchInfo"]["startSequenceNumber"] = 800000000003126276362
    record["DDBStreamBatchInfo"]["endSequenceNumber"] = 800000000003126276363
    failure = parse_record(record)
    assert (failure.start_sequence, failure.end_sequence) == (
        "800000000003126276362",
        "800000000003126276363",
    )


def test_sequence_numbers_compare_as_integers_not_strings() -> None:
    record = load_event("ddb_esm_sqs_record.json")
    record["DDBStreamBatchInfo"]["startSequenceNumber"] = "9" * 21  # "99.." > "100.." as strings
    record["DDBStreamBatchInfo"]["endSequenceNumber"] = "1" + "0" * 21
    assert parse_record(record).end == 10**21


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2019-11-14T00:13:49Z", at(2019, 11, 14, 0, 13, 49)),
        ("2019-11-14T00:13:49.717Z", at(2019, 11, 14, 0, 13, 49, 717)),
        ("2019-11-14T00:13:49.717123456Z", datetime(2019, 11, 14, 0, 13, 49, 717123, tzinfo=UTC)),
        ("2019-11-14T02:13:49+02:00", at(2019, 11, 14, 0, 13, 49)),
        ("2019-11-13T19:13:49.5-05:00", at(2019, 11, 14, 0, 13, 49, 500)),
        ("2019-11-14T00:13:49+0000", at(2019, 11, 14, 0, 13, 49)),
    ],
)
def test_timestamps_with_or_without_millis_and_offsets(text: str, expected: datetime) -> None:
    record = load_event("ddb_esm_sqs_record.json")
    record["timestamp"] = text
    stamp = parse_record(record).timestamp
    assert stamp == expected
    assert stamp is not None and stamp.tzinfo is not None


def test_timestamp_offset_is_kept_as_the_same_instant() -> None:
    record = load_event("pipes_ddb_dlq.json")
    record["timestamp"] = "2024-03-08T01:00:00+01:00"
    stamp = parse_record(record).timestamp
    assert stamp == datetime(2024, 3, 8, 1, 0, tzinfo=timezone(timedelta(hours=1)))


def test_pipes_record_with_requestcontext_is_lambda() -> None:
    # requestContext is the Lambda form; context alone the Pipes form.
    record = load_event("pipes_ddb_dlq.json")
    record["requestContext"] = {"functionArn": FUNCTION, "condition": "RetryAttemptsExhausted"}
    assert parse_record(record).origin is Origin.LAMBDA_ESM


def test_bom_and_leading_whitespace_are_tolerated() -> None:
    data = "\ufeff  \n" + event_text("ddb_esm_sqs_record.json")
    assert parse_document(data.encode()) == [EXPECTED["ddb_esm_sqs_record.json"]]


# ---- envelopes


def test_sns_notification_body() -> None:
    notification = load_event("sns_notification_ddb.json")
    failures = parse_message(json.dumps(notification))
    assert failures == [SNS_NOTIFICATION_FAILURE]
    assert failures[0].raw == json.loads(notification["Message"])  # the inner record, not the envelope
    assert parse_message(notification) == [SNS_NOTIFICATION_FAILURE]


def test_sns_lambda_event() -> None:
    failures = parse_message(load_event("sns_lambda_event_ddb.json"))
    assert len(failures) == 1
    failure = failures[0]
    assert failure.kind is StreamKind.DYNAMODB
    assert failure.shard_id == "shardId-00000001712534400000-3f2a9b1c"
    assert (failure.start_sequence, failure.end_sequence) == (
        "200000000044120938601",
        "200000000044120938633",
    )
    assert failure.batch_size == 3
    assert failure.origin is Origin.LAMBDA_ESM
    assert "Sns" not in failure.raw and "DDBStreamBatchInfo" in failure.raw


def test_sns_lambda_event_with_several_records() -> None:
    sns_event = load_event("sns_lambda_event_ddb.json")
    second = copy.deepcopy(sns_event["Records"][0])
    second["Sns"]["Message"] = event_text("kinesis_esm_record.json")
    sns_event["Records"].append(second)
    failures = parse_message(sns_event)
    assert [f.kind for f in failures] == [StreamKind.DYNAMODB, StreamKind.KINESIS]
    assert failures[1] == EXPECTED["kinesis_esm_record.json"]


def test_sqs_lambda_event_with_two_messages() -> None:
    failures = parse_message(load_event("sqs_lambda_event_ddb.json"))
    assert [(f.start_sequence, f.end_sequence) for f in failures] == [
        ("800000000003126276600", "800000000003126276640"),
        ("800000000003126276655", "800000000003126276699"),
    ]
    assert all(f.shard_id == DDB_SHARD and f.batch_size == 5 for f in failures)
    assert all(f.kind is StreamKind.DYNAMODB and f.origin is Origin.LAMBDA_ESM for f in failures)


def test_sqs_event_holding_sns_notification_holding_record() -> None:
    assert parse_message(load_event("sqs_lambda_event_sns_ddb.json")) == [SNS_NOTIFICATION_FAILURE]


def test_sqs_messages() -> None:
    messages = sqs_messages(load_event("sqs_lambda_event_ddb.json"))
    assert [message_id for message_id, _ in messages] == [
        "059f36b4-87a3-44ab-83d2-661975830a7d",
        "2e1424d4-f796-459a-8184-9c92662be6da",
    ]
    assert parse_message(messages[0][1])[0].start_sequence == "800000000003126276600"


def test_s3_object_refs_decodes_keys() -> None:
    refs = s3_object_refs(load_event("s3_event_notification.json"))
    assert refs == [
        (
            "replayer-failures-123456789012",
            "aws/lambda/4f9a1c2e-6b3d-4e8f-a0b1-c2d3e4f5a6b7/shardId-00000001709370000000-9e7d1f0a/"
            "2024/03/02/2024-03-02T09.17.12-0b6f4a2e-91c3-4d5e-a7d5-3e8f1c2b4d60",
        ),
        ("replayer-failures-123456789012", "manual uploads/2024-03-02T09:20:00Z batch+1.json"),
    ]


def test_s3_object_refs_skips_removals_and_test_events() -> None:
    notification = load_event("s3_event_notification.json")
    notification["Records"][0]["eventName"] = "ObjectRemoved:Delete"
    assert [key for _, key in s3_object_refs(notification)] == [
        "manual uploads/2024-03-02T09:20:00Z batch+1.json"
    ]
    test_event = {
        "Service": "Amazon S3",
        "Event": "s3:TestEvent",
        "Time": "2024-03-02T09:00:00.000Z",
        "Bucket": "replayer-failures-123456789012",
        "RequestId": "5582815E1AEA5ADF",
        "HostId": "8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR+YstdA6Knx4Ip8EXAMPLE",
    }
    assert s3_object_refs(test_event) == []


def test_document_array_and_json_lines() -> None:
    names = ["ddb_esm_sqs_record.json", "kinesis_esm_record.json", "pipes_ddb_dlq.json"]
    records = [load_event(name) for name in names]
    expected = [EXPECTED[name] for name in names]
    assert parse_document(json.dumps(records)) == expected
    lines = "\n".join(json.dumps(r) for r in records[:2]) + "\n\n  \r\n" + json.dumps(records[2]) + "\n"
    assert parse_document(lines) == expected
    assert parse_document(lines.replace("\n", "\r\n").encode()) == expected


def test_document_mixes_forms() -> None:
    items = [
        load_event("sqs_lambda_event_ddb.json"),
        event_text("ddb_esm_sqs_record.json"),  # a body kept as a JSON string
        load_event("sns_notification_ddb.json"),
    ]
    failures = parse_document(json.dumps(items))
    assert len(failures) == 4
    assert failures[2] == EXPECTED["ddb_esm_sqs_record.json"]
    assert failures[3] == SNS_NOTIFICATION_FAILURE


def test_empty_documents() -> None:
    assert parse_document("") == []
    assert parse_document(b"  \n\n") == []
    assert parse_document("[]") == []


def test_envelope_depth_is_bounded() -> None:
    message: Any = load_event("ddb_esm_sqs_record.json")
    for _ in range(MAX_ENVELOPE_DEPTH):
        message = {
            "Type": "Notification",
            "TopicArn": "arn:aws:sns:us-east-2:123456789012:t",
            "Message": json.dumps(message),
        }
    assert parse_message(message) == [EXPECTED["ddb_esm_sqs_record.json"]]
    too_deep = {"Type": "Notification", "Message": json.dumps(message)}
    with pytest.raises(ParseError, match="nested more than 4 deep"):
        parse_message(too_deep)


# ---- malformed input


def _set(obj: Any, keys: tuple[str, ...], value: Any) -> Any:
    out = copy.deepcopy(obj)
    target = out
    for key in keys[:-1]:
        target = target[key]
    target[keys[-1]] = value
    return out


def _drop(obj: Any, keys: tuple[str, ...]) -> Any:
    out = copy.deepcopy(obj)
    target = out
    for key in keys[:-1]:
        target = target[key]
    del target[keys[-1]]
    return out


DDB = load_event("ddb_esm_sqs_record.json")
KIN = load_event("kinesis_esm_record.json")
PIPES = load_event("pipes_ddb_dlq.json")
S3DEST = load_event("s3_destination_ddb.json")
I = "DDBStreamBatchInfo"  # noqa: E741  (short: the table below reads like the JSON paths)
IP = f"$.{I}"

BAD_RECORDS: list[tuple[str, Any, str, str]] = [
    ("not an object", [DDB], "$", "expected an invocation record"),
    ("null", None, "$", "got null"),
    ("neither batch info", _drop(DDB, (I,)), "$", "neither DDBStreamBatchInfo nor KinesisBatchInfo"),
    ("keys listed", _drop(DDB, (I,)), "$", "keys seen: 'requestContext', 'responseContext'"),
    ("async record", {"requestContext": {}, "requestPayload": {}}, "$", "asynchronous-invocation record"),
    ("both batch infos", {**DDB, "KinesisBatchInfo": KIN["KinesisBatchInfo"]}, "$", "both"),
    ("batch info not object", _set(DDB, (I,), "x"), IP, "expected a JSON object, got string"),
    ("no context", _drop(DDB, ("requestContext",)), "$", "neither requestContext"),
    ("context not object", _set(PIPES, ("context",), []), "$.context", "got array"),
    ("missing stream arn", _drop(DDB, (I, "streamArn")), f"{IP}.streamArn", "missing streamArn"),
    ("stream arn number", _set(DDB, (I, "streamArn"), 5), f"{IP}.streamArn", "must be a string, got number"),
    (
        "stream arn lambda",
        _set(DDB, (I, "streamArn"), FUNCTION),
        f"{IP}.streamArn",
        "not a DynamoDB or Kinesis",
    ),
    (
        "stream arn path",
        _set(DDB, (I, "streamArn"), "arn:aws:dynamodb:us-east-2:123456789012:table/a/b/stream/x"),
        f"{IP}.streamArn",
        "not a DynamoDB or Kinesis",
    ),
    (
        "stream arn dotdot",
        _set(KIN, ("KinesisBatchInfo", "streamArn"), "arn:aws:kinesis:us-east-2:123456789012:stream/.."),
        "$.KinesisBatchInfo.streamArn",
        "not a DynamoDB or Kinesis",
    ),
    (
        "stream arn dotdot label",
        _set(DDB, (I, "streamArn"), "arn:aws:dynamodb:us-east-2:123456789012:table/t/stream/.."),
        f"{IP}.streamArn",
        "not a DynamoDB or Kinesis",
    ),
    ("stream arn newline", _set(DDB, (I, "streamArn"), DDB_ARN + "\n"), f"{IP}.streamArn", "not a DynamoDB"),
    (
        "stream arn unicode digits",
        _set(KIN, ("KinesisBatchInfo", "streamArn"), "arn:aws:kinesis:us-east-2:١٢٣٤٥٦٧٨٩٠١٢:stream/s"),
        "$.KinesisBatchInfo.streamArn",
        "not a DynamoDB or Kinesis",
    ),
    ("kind mismatch ddb", _set(DDB, (I, "streamArn"), KINESIS_ARN), f"{IP}.streamArn", "is a kinesis stream"),
    (
        "kind mismatch kinesis",
        _set(KIN, ("KinesisBatchInfo", "streamArn"), DDB_ARN),
        "$.KinesisBatchInfo.streamArn",
        "carries kinesis batch info",
    ),
    ("missing shard", _drop(DDB, (I, "shardId")), f"{IP}.shardId", "missing shardId"),
    ("shard path", _set(DDB, (I, "shardId"), "shardId-../../etc"), f"{IP}.shardId", "not a shard id"),
    ("shard prefix", _set(DDB, (I, "shardId"), "000000000006"), f"{IP}.shardId", "not a shard id"),
    ("shard newline", _set(DDB, (I, "shardId"), "shardId-000000000006\n"), f"{IP}.shardId", "not a shard id"),
    ("shard long", _set(DDB, (I, "shardId"), "shardId-" + "0" * 81), f"{IP}.shardId", "not a shard id"),
    ("shard null", _set(DDB, (I, "shardId"), None), f"{IP}.shardId", "must be a string, got null"),
    ("missing start", _drop(DDB, (I, "startSequenceNumber")), f"{IP}.startSequenceNumber", "missing"),
    ("missing end", _drop(DDB, (I, "endSequenceNumber")), f"{IP}.endSequenceNumber", "missing"),
    (
        "start sign",
        _set(DDB, (I, "startSequenceNumber"), "-1"),
        f"{IP}.startSequenceNumber",
        "decimal digits",
    ),
    (
        "start plus",
        _set(DDB, (I, "startSequenceNumber"), "+1"),
        f"{IP}.startSequenceNumber",
        "decimal digits",
    ),
    (
        "start space",
        _set(DDB, (I, "startSequenceNumber"), " 1"),
        f"{IP}.startSequenceNumber",
        "decimal digits",
    ),
    ("start exponent", _set(DDB, (I, "startSequenceNumber"), "1e5"), f"{IP}.startSequenceNumber", "decimal"),
    ("start empty", _set(DDB, (I, "startSequenceNumber"), ""), f"{IP}.startSequenceNumber", "decimal digits"),
    (
        "start underscore",
        _set(DDB, (I, "startSequenceNumber"), "1_0"),
        f"{IP}.startSequenceNumber",
        "decimal",
    ),
    ("start arabic", _set(DDB, (I, "startSequenceNumber"), "١٢"), f"{IP}.startSequenceNumber", "decimal"),
    ("start newline", _set(DDB, (I, "startSequenceNumber"), "12\n"), f"{IP}.startSequenceNumber", "decimal"),
    (
        "start 129 digits",
        _set(DDB, (I, "startSequenceNumber"), "1" * 129),
        f"{IP}.startSequenceNumber",
        "128",
    ),
    ("start float", _set(DDB, (I, "startSequenceNumber"), 1.0), f"{IP}.startSequenceNumber", "got number"),
    ("start bool", _set(DDB, (I, "startSequenceNumber"), True), f"{IP}.startSequenceNumber", "got boolean"),
    (
        "start negative int",
        _set(DDB, (I, "startSequenceNumber"), -5),
        f"{IP}.startSequenceNumber",
        "non-negative",
    ),
    ("end huge int", _set(DDB, (I, "endSequenceNumber"), 10**200), f"{IP}.endSequenceNumber", "at most 128"),
    (
        "start after end",
        _set(DDB, (I, "startSequenceNumber"), "800000000003126276363"),
        f"{IP}.startSequenceNumber",
        "800000000003126276363 is greater than endSequenceNumber 800000000003126276362",
    ),
    ("batch zero", _set(DDB, (I, "batchSize"), 0), f"{IP}.batchSize", "between 1 and 10000"),
    ("batch big", _set(DDB, (I, "batchSize"), 10001), f"{IP}.batchSize", "between 1 and 10000"),
    ("batch bool", _set(DDB, (I, "batchSize"), True), f"{IP}.batchSize", "must be an integer, got boolean"),
    ("batch string", _set(DDB, (I, "batchSize"), "1"), f"{IP}.batchSize", "got string"),
    ("batch float", _set(DDB, (I, "batchSize"), 1.0), f"{IP}.batchSize", "got number"),
    ("time number", _set(DDB, ("timestamp",), 1573690429), "$.timestamp", "must be an ISO 8601 string"),
    ("time no zone", _set(DDB, ("timestamp",), "2019-11-14T00:13:49"), "$.timestamp", "with a zone"),
    ("time date only", _set(DDB, ("timestamp",), "2019-11-14"), "$.timestamp", "with a zone"),
    ("time garbage", _set(DDB, ("timestamp",), "yesterday"), "$.timestamp", "with a zone"),
    ("time month 13", _set(DDB, ("timestamp",), "2019-13-14T00:13:49Z"), "$.timestamp", "not a valid time"),
    ("time overflow", _set(DDB, ("timestamp",), "0001-01-01T00:00:00+01:00"), "$.timestamp", "not a valid"),
    (
        "arrival bad",
        _set(DDB, (I, "approximateArrivalOfFirstRecord"), "2019-11-14 00:13:19Z"),
        f"{IP}.approximateArrivalOfFirstRecord",
        "ISO 8601",
    ),
    (
        "condition number",
        _set(DDB, ("requestContext", "condition"), 1),
        "$.requestContext.condition",
        "string",
    ),
    (
        "condition long",
        _set(DDB, ("requestContext", "condition"), "x" * 257),
        "$.requestContext.condition",
        "256",
    ),
    ("condition control", _set(PIPES, ("context", "condition"), "a\nb"), "$.context.condition", "printable"),
    (
        "function arn bad",
        _set(DDB, ("requestContext", "functionArn"), "myfunction"),
        "$.requestContext.functionArn",
        "not an",
    ),
    (
        "pipe arn bad",
        _set(PIPES, ("context", "partnerResourceArn"), ["arn"]),
        "$.context.partnerResourceArn",
        "must be a string, got array",
    ),
    ("payload not json", _set(S3DEST, ("payload",), "{not json"), "$.payload", "invalid JSON"),
    ("payload array", _set(S3DEST, ("payload",), "[1]"), "$.payload", 'a {"Records": [...]} event'),
    ("payload number", _set(S3DEST, ("payload",), 3), "$.payload", "got number"),
    ("payload no records", _set(S3DEST, ("payload",), {}), "$.payload.Records", "missing Records"),
    (
        "payload records obj",
        _set(S3DEST, ("payload",), {"Records": {}}),
        "$.payload.Records",
        "must be an array",
    ),
    (
        "payload record not object",
        _set(S3DEST, ("payload",), '{"Records": [{}, 2]}'),
        "$.payload.Records[1]",
        "expected a JSON object, got number",
    ),
    ("payload NaN", _set(S3DEST, ("payload",), '{"Records": [{"x": NaN}]}'), "$.payload", "NaN"),
]


@pytest.mark.parametrize(
    ("value", "path", "phrase"), [case[1:] for case in BAD_RECORDS], ids=[c[0] for c in BAD_RECORDS]
)
def test_bad_records(value: Any, path: str, phrase: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_record(value, payloads=True)
    assert caught.value.path == path
    assert phrase in caught.value.reason
    assert str(caught.value) == f"{caught.value.path}: {caught.value.reason}"


SNS_EVENT = load_event("sns_lambda_event_ddb.json")
SQS_EVENT = load_event("sqs_lambda_event_ddb.json")
S3_EVENT = load_event("s3_event_notification.json")
NOTIFICATION = load_event("sns_notification_ddb.json")

BAD_MESSAGES: list[tuple[str, Any, str, str]] = [
    ("invalid json", "{", "$", "invalid JSON"),
    ("empty text", "", "$", "invalid JSON"),
    ("trailing garbage", event_text("ddb_esm_sqs_record.json") + "x", "$", "Extra data"),
    ("invalid utf-8", b'{"a": "\xff"}', "$", "not valid UTF-8"),
    ("NaN", '{"a": NaN}', "$", "NaN"),
    ("Infinity", '{"a": -Infinity}', "$", "Infinity"),
    ("huge int", '{"a": ' + "9" * 5000 + "}", "$", "invalid JSON"),
    ("too deep json", "[" * 100_000 + "]" * 100_000, "$", "nested too deeply"),
    ("array", "[]", "$", "expected a JSON object, got array"),
    ("string in string", json.dumps(event_text("ddb_esm_sqs_record.json")), "$", "got string"),
    ("number", 5, "$", "got number"),
    ("unknown envelope", {"hello": 1, "world": 2}, "$", "unknown message"),
    ("unknown keys shown", {"hello": 1, "world": 2}, "$", "keys seen: 'hello', 'world'"),
    ("unknown keys truncated", {f"k{i}": i for i in range(20)}, "$", "'k7', ..."),
    ("long key truncated", {"x" * 1000: 1}, "$", "xxx..."),
    ("empty object", {}, "$", "keys seen: none"),
    ("record inner error", _set(DDB, (I, "shardId"), "bad"), f"{IP}.shardId", "not a shard id"),
    ("sns notification no message", {"Type": "Notification"}, "$.Message", "missing Message"),
    ("sns notification message obj", _set(NOTIFICATION, ("Message",), {}), "$.Message", "must be a string"),
    (
        "sns notification bad record",
        _set(NOTIFICATION, ("Message",), json.dumps(_drop(DDB, (I, "shardId")))),
        f"$.Message.{I}.shardId",
        "missing shardId",
    ),
    ("sns message not json", _set(NOTIFICATION, ("Message",), "hello"), "$.Message", "invalid JSON"),
    (
        "sns subscription confirmation",
        {
            "Type": "SubscriptionConfirmation",
            "TopicArn": "arn:aws:sns:us-east-2:123456789012:t",
            "Token": "x",
        },
        "$.Type",
        "'SubscriptionConfirmation' message, not a Notification",
    ),
    ("records not list", {"Records": {}}, "$.Records", "must be an array"),
    ("records empty", {"Records": []}, "$.Records", "empty"),
    ("records item not object", {"Records": [1]}, "$.Records[0]", "got number"),
    ("records unknown source", {"Records": [{"eventSource": "aws:kafka"}]}, "$.Records[0]", "'aws:kafka'"),
    ("records no source", {"Records": [{}]}, "$.Records[0]", "event source missing"),
    ("s3 event to parse_message", S3_EVENT, "$.Records[0]", "s3_object_refs"),
    (
        "stream event to parse_message",
        json.loads(S3DEST["payload"]),
        "$.Records[0]",
        "aws:dynamodb stream event record, not an invocation record",
    ),
    (
        "sns no Sns",
        {"Records": [{"EventSource": "aws:sns"}]},
        "$.Records[0].Sns",
        "missing",
    ),
    (
        "sns message not string",
        {"Records": [{"EventSource": "aws:sns", "Sns": {"Message": 1}}]},
        "$.Records[0].Sns.Message",
        "must be a string",
    ),
    (
        "sns event bad record",
        {
            "Records": [
                {"EventSource": "aws:sns", "Sns": {"Message": json.dumps(_set(DDB, (I, "batchSize"), 0))}}
            ]
        },
        f"$.Records[0].Sns.Message.{I}.batchSize",
        "between 1",
    ),
    ("sqs no body", {"Records": [{"eventSource": "aws:sqs"}]}, "$.Records[0].body", "missing body"),
    (
        "sqs second body bad",
        _set(SQS_EVENT, ("Records",), [SQS_EVENT["Records"][0], {"eventSource": "aws:sqs", "body": "{}"}]),
        "$.Records[1].body",
        "keys seen: none",
    ),
    (
        "sqs body bad record",
        {
            "Records": [
                {"eventSource": "aws:sqs", "body": json.dumps(_set(DDB, (I, "endSequenceNumber"), "1" * 21))}
            ]
        },
        f"$.Records[0].body.{I}.startSequenceNumber",
        f"is greater than endSequenceNumber {'1' * 21}",
    ),
]


@pytest.mark.parametrize(
    ("value", "path", "phrase"), [c[1:] for c in BAD_MESSAGES], ids=[c[0] for c in BAD_MESSAGES]
)
def test_bad_messages(value: Any, path: str, phrase: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_message(value)
    assert caught.value.path == path
    assert phrase in caught.value.reason


def test_too_large_input() -> None:
    big = " " * (MAX_TEXT_BYTES + 1)
    for parse in (parse_message, parse_document):
        with pytest.raises(ParseError, match="16 MiB"):
            parse(big)
        with pytest.raises(ParseError, match="16 MiB"):
            parse(big.encode())


BAD_DOCUMENTS: list[tuple[str, str | bytes, str, str]] = [
    ("invalid", "{", "<input>", "invalid JSON"),
    ("invalid utf-8", b"\xc3\x28", "<input>", "not valid UTF-8"),
    ("scalar", "5", "<input>", "got number"),
    (
        "array element",
        json.dumps([DDB, DDB, DDB, _set(DDB, (I, "shardId"), "x")]),
        f"<input>[3].{I}.shardId",
        "not a shard id",
    ),
    ("array element scalar", json.dumps([DDB, None]), "<input>[1]", "got null"),
    ("nested array", json.dumps([[DDB]]), "<input>[0]", "got array"),
    (
        "json lines line 7",
        "\n".join([json.dumps(DDB)] * 3 + [""] * 3 + [json.dumps(_drop(DDB, (I,)))]),
        "<input>:7.$",
        "neither DDBStreamBatchInfo",
    ),
    (
        "json lines field",
        json.dumps(DDB) + "\n" + json.dumps(_drop(DDB, (I, "streamArn"))),
        f"<input>:2.$.{I}.streamArn",
        "missing streamArn",
    ),
    (
        "json lines bad line",
        json.dumps(DDB) + "\n" + json.dumps(DDB) + "\n{oops",
        "<input>:3.$",
        "invalid JSON",
    ),
]


@pytest.mark.parametrize(
    ("value", "path", "phrase"), [c[1:] for c in BAD_DOCUMENTS], ids=[c[0] for c in BAD_DOCUMENTS]
)
def test_bad_documents(value: str | bytes, path: str, phrase: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_document(value)
    assert caught.value.path == path
    assert phrase in caught.value.reason


def test_document_path_prefix() -> None:
    with pytest.raises(ParseError) as caught:
        parse_document("[1]", path="failures.json")
    assert caught.value.path == "failures.json[0]"


BAD_SQS_EVENTS: list[tuple[str, Any, str, str]] = [
    ("not object", [], "$", "expected an SQS event"),
    ("no records", {}, "$.Records", "missing Records"),
    ("empty", {"Records": []}, "$.Records", "empty"),
    ("sns record", SNS_EVENT, "$.Records[0].eventSource", "expected eventSource 'aws:sqs', got 'aws:sns'"),
    ("s3 record", S3_EVENT, "$.Records[0].eventSource", "got 'aws:s3'"),
    (
        "no message id",
        {"Records": [{"eventSource": "aws:sqs", "body": "x"}]},
        "$.Records[0].messageId",
        "missing",
    ),
    (
        "empty message id",
        {"Records": [{"eventSource": "aws:sqs", "messageId": "", "body": "x"}]},
        "$.Records[0].messageId",
        "1 to 256",
    ),
    (
        "body not string",
        {"Records": [{"eventSource": "aws:sqs", "messageId": "m", "body": {}}]},
        "$.Records[0].body",
        "must be a string, got object",
    ),
]


@pytest.mark.parametrize(
    ("value", "path", "phrase"), [c[1:] for c in BAD_SQS_EVENTS], ids=[c[0] for c in BAD_SQS_EVENTS]
)
def test_bad_sqs_events(value: Any, path: str, phrase: str) -> None:
    with pytest.raises(ParseError) as caught:
        sqs_messages(value)
    assert caught.value.path == path
    assert phrase in caught.value.reason


S3_RECORD = S3_EVENT["Records"][1]


def _s3_event(**changes: Any) -> dict[str, Any]:
    record = copy.deepcopy(S3_RECORD)
    for dotted, value in changes.items():
        keys = tuple(dotted.split("__"))
        record = _drop(record, keys) if value is _MISSING else _set(record, keys, value)
    return {"Records": [record]}


_MISSING = object()

BAD_S3_EVENTS: list[tuple[str, Any, str, str]] = [
    ("not object", "x", "$", "expected an S3 event notification"),
    ("no records", {"Event": "s3:ObjectCreated:Put"}, "$.Records", "missing Records"),
    ("sqs event", SQS_EVENT, "$.Records[0].eventSource", "got 'aws:sqs'"),
    ("no s3", _s3_event(s3=_MISSING), "$.Records[0].s3", "missing s3"),
    ("no bucket", _s3_event(s3__bucket=_MISSING), "$.Records[0].s3.bucket", "missing bucket"),
    ("bucket name type", _s3_event(s3__bucket__name=1), "$.Records[0].s3.bucket.name", "must be a string"),
    (
        "bucket name bad",
        _s3_event(s3__bucket__name="../x"),
        "$.Records[0].s3.bucket.name",
        "not an S3 bucket",
    ),
    ("no object", _s3_event(s3__object=_MISSING), "$.Records[0].s3.object", "missing object"),
    ("key type", _s3_event(s3__object__key=None), "$.Records[0].s3.object.key", "got null"),
    ("key empty", _s3_event(s3__object__key=""), "$.Records[0].s3.object.key", "empty"),
    ("key not utf-8", _s3_event(s3__object__key="a%FFb"), "$.Records[0].s3.object.key", "not UTF-8"),
    (
        "key surrogate",
        _s3_event(s3__object__key="a\ud800"),
        "$.Records[0].s3.object.key",
        "not valid Unicode",
    ),
    ("key too long", _s3_event(s3__object__key="k" * 1025), "$.Records[0].s3.object.key", "1024 bytes"),
]


@pytest.mark.parametrize(
    ("value", "path", "phrase"), [c[1:] for c in BAD_S3_EVENTS], ids=[c[0] for c in BAD_S3_EVENTS]
)
def test_bad_s3_events(value: Any, path: str, phrase: str) -> None:
    with pytest.raises(ParseError) as caught:
        s3_object_refs(value)
    assert caught.value.path == path
    assert phrase in caught.value.reason


def test_failure_fields_are_plain_values() -> None:
    failure = parse_record(DDB)
    fields = _all_fields(failure)
    assert isinstance(fields["kind"], StreamKind)
    assert isinstance(fields["origin"], Origin)
    assert failure.describe()["range_id"] == failure.range_id
    assert failure.region == "us-east-2"


# ---- #12.7: what AWS can never accept is permanent, decided at parse time


K = "KinesisBatchInfo"
_DDB_ARN = DDB[I]["streamArn"]


@pytest.mark.parametrize(
    ("record", "path", "phrase"),
    [
        (_set(DDB, (I, "shardId"), "shardId-short"), f"$.{I}.shardId", "28 to 65 characters long"),
        (_set(DDB, (I, "shardId"), "shardId-" + "a" * 58), f"$.{I}.shardId", "28 to 65 characters long"),
        (_set(DDB, (I, "startSequenceNumber"), "1" * 20), f"$.{I}.startSequenceNumber", "21 to 40 digits"),
        (_set(DDB, (I, "endSequenceNumber"), "9" * 41), f"$.{I}.endSequenceNumber", "21 to 40 digits"),
        (_set(KIN, (K, "shardId"), "shardId-" + "a" * 121), f"$.{K}.shardId", "not a shard id"),
        (
            _set(DDB, (I, "streamArn"), _DDB_ARN.replace("arn:aws:", "arn:aws-cn:")),
            f"$.{I}.streamArn",
            "not a region of partition 'aws-cn'",
        ),
        (
            _set(KIN, (K, "streamArn"), KIN[K]["streamArn"].replace(":us-east-2:", ":mars-north-1:")),
            f"$.{K}.streamArn",
            "not a region of partition 'aws'",
        ),
        (
            _set(DDB, ("payload",), {"Records": [functools.reduce(lambda v, _: {"v": v}, range(70), {})]}),
            "$.payload.Records[0]",
            "nested more than 64 levels deep",
        ),
    ],
    ids=["ddb-shard-short", "ddb-shard-long", "ddb-seq-short", "ddb-seq-long", "kinesis-shard-long",
         "region-not-in-partition", "unknown-region", "payload-too-deep"],
)  # fmt: skip
def test_what_aws_never_accepts_is_refused_at_parse_time(record: Any, path: str, phrase: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_record(record, payloads=True)
    assert caught.value.path == path and phrase in caught.value.reason


def test_a_payload_sequence_number_of_non_ascii_digits_is_a_problem_not_a_crash() -> None:
    """ "²".isdigit() is True but int("²") fails: such a payload is not believed (read from the stream)."""
    from replayer.readers.payload import payload_problem

    good = {"dynamodb": {"SequenceNumber": DDB[I]["startSequenceNumber"]}, "eventName": "INSERT"}
    odd = {"dynamodb": {"SequenceNumber": "²"}, "eventName": "INSERT"}
    failure = parse_record(_set(DDB, ("payload",), {"Records": [odd, good]}), payloads=True)
    assert payload_problem(failure) == "record 0 has no dynamodb sequence number"
