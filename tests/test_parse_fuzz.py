"""Property tests: the parser raises ParseError and nothing else, and valid records round-trip."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replayer.errors import ParseError
from replayer.model import Origin, StreamKind
from replayer.parse import parse_document, parse_message, parse_record, s3_object_refs, sqs_messages
from tests.support.events import event_text, sample_paths

SAMPLES: dict[str, Any] = {p.name: json.loads(p.read_text()) for p in sample_paths()}
RECORD_SAMPLES = [name for name, value in SAMPLES.items() if "requestContext" in value or "context" in value]

FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Keys the parser looks at, so random objects reach past the first check now and then.
KEYS = [
    "DDBStreamBatchInfo",
    "KinesisBatchInfo",
    "requestContext",
    "responseContext",
    "context",
    "functionArn",
    "partnerResourceArn",
    "condition",
    "timestamp",
    "payload",
    "streamArn",
    "shardId",
    "startSequenceNumber",
    "endSequenceNumber",
    "batchSize",
    "approximateArrivalOfFirstRecord",
    "Records",
    "Type",
    "Message",
    "TopicArn",
    "Sns",
    "body",
    "messageId",
    "eventSource",
    "EventSource",
    "eventName",
    "s3",
    "bucket",
    "object",
    "name",
    "key",
    "Event",
]
SCALAR_STRINGS = [
    "Notification",
    "aws:sqs",
    "aws:sns",
    "aws:s3",
    "s3:TestEvent",
    "ObjectCreated:Put",
    "shardId-000000000006",
    "800000000003126276362",
    "2019-11-14T00:13:49.717Z",
    "arn:aws:kinesis:us-east-2:123456789012:stream/s",
    "arn:aws:dynamodb:us-east-2:123456789012:table/t/stream/2019-11-14T00:04:06.388",
    '{"Records": []}',
    "{}",
]

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**130), max_value=10**130)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
    | st.sampled_from(SCALAR_STRINGS)
)
keys = st.sampled_from(KEYS) | st.text(max_size=12)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=5),
    max_leaves=25,
)
# Values json.dumps can write as standard JSON (no NaN/Infinity).
finite_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=5),
    max_leaves=25,
)


def only_parse_errors(call: Callable[[], object]) -> None:
    """Run `call`; a ParseError is fine (and must say where and what), anything else fails the test."""
    try:
        call()
    except ParseError as exc:
        assert exc.path and isinstance(exc.path, str)
        assert exc.reason and isinstance(exc.reason, str)
        assert len(exc.reason) < 2000  # input is quoted back only in truncated form


def all_entry_points(value: Any) -> None:
    only_parse_errors(lambda: parse_record(value))
    only_parse_errors(lambda: parse_message(value))
    only_parse_errors(lambda: s3_object_refs(value))
    only_parse_errors(lambda: sqs_messages(value))


# ---- arbitrary input


@FUZZ
@given(json_values)
def test_arbitrary_values(value: Any) -> None:
    all_entry_points(value)


@FUZZ
@given(finite_json)
def test_arbitrary_json_documents(value: Any) -> None:
    text = json.dumps(value)
    only_parse_errors(lambda: parse_document(text))
    only_parse_errors(lambda: parse_message(text))
    only_parse_errors(lambda: parse_document("\n".join(json.dumps(v) for v in (value, value))))


@FUZZ
@given(st.text(max_size=200))
def test_arbitrary_text(text: str) -> None:
    only_parse_errors(lambda: parse_document(text))
    only_parse_errors(lambda: parse_message(text))


@FUZZ
@given(st.binary(max_size=200))
def test_arbitrary_bytes(data: bytes) -> None:
    only_parse_errors(lambda: parse_document(data))
    only_parse_errors(lambda: parse_message(data))


@settings(max_examples=20, deadline=None)
@given(st.integers(min_value=500, max_value=200_000), st.sampled_from("[{"))
def test_deep_nesting(depth: int, opener: str) -> None:
    closer = {"[": "]", "{": "}"}[opener]
    body = '{"a":' * depth + "1" + "}" * depth if opener == "{" else opener * depth + closer * depth
    only_parse_errors(lambda: parse_document(body))
    only_parse_errors(lambda: parse_message(body))


# ---- mutations of valid samples


def paths_of(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every (key or index) path into `value`, containers included."""
    found: list[tuple[Any, ...]] = []
    if isinstance(value, dict):
        items: list[tuple[Any, Any]] = list(value.items())
    elif isinstance(value, list):
        items = list(enumerate(value))
    else:
        return found
    for key, child in items:
        found.append((*prefix, key))
        found.extend(paths_of(child, (*prefix, key)))
    return found


def mutate(value: Any, path: tuple[Any, ...], replacement: Any, drop: bool) -> Any:
    out = copy.deepcopy(value)
    parent = out
    for key in path[:-1]:
        parent = parent[key]
    if drop:
        del parent[path[-1]]
    else:
        parent[path[-1]] = replacement
    return out


@st.composite
def mutated_samples(draw: st.DrawFn) -> Any:
    sample = SAMPLES[draw(st.sampled_from(sorted(SAMPLES)))]
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        paths = paths_of(sample)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        sample = mutate(sample, path, draw(json_values), drop=draw(st.booleans()))
    return sample


@FUZZ
@given(mutated_samples())
def test_mutated_samples(value: Any) -> None:
    all_entry_points(value)
    only_parse_errors(lambda: parse_document(json.dumps(value)))


@FUZZ
@given(st.sampled_from(sorted(SAMPLES)), st.data())
def test_text_mutations_of_samples(name: str, data: st.DataObject) -> None:
    text = event_text(name)
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        at = data.draw(st.integers(min_value=0, max_value=len(text)))
        cut = data.draw(st.integers(min_value=0, max_value=3))
        text = text[:at] + data.draw(st.text(max_size=3)) + text[at + cut :]
    only_parse_errors(lambda: parse_document(text))
    only_parse_errors(lambda: parse_document(text.encode("utf-8", "surrogatepass")))


# ---- envelopes around (possibly broken) records


def sqs_body(message: str) -> str:
    return message


def sns_notification(message: str) -> str:
    return json.dumps(
        {"Type": "Notification", "TopicArn": "arn:aws:sns:us-east-2:123456789012:t", "Message": message}
    )


def sns_event(message: str) -> str:
    return json.dumps(
        {"Records": [{"EventSource": "aws:sns", "Sns": {"Type": "Notification", "Message": message}}]}
    )


def sqs_event(message: str) -> str:
    return json.dumps({"Records": [{"eventSource": "aws:sqs", "messageId": "m-1", "body": message}]})


ENVELOPES = [sqs_body, sns_notification, sns_event, sqs_event]


def wrap(message: str, envelopes: list[Callable[[str], str]]) -> str:
    for envelope in envelopes:
        message = envelope(message)
    return message


@FUZZ
@given(
    mutated_samples() | st.sampled_from([SAMPLES[n] for n in RECORD_SAMPLES]),
    st.lists(st.sampled_from(ENVELOPES), max_size=6),
)
def test_wrapped_in_envelopes(record: Any, envelopes: list[Callable[[str], str]]) -> None:
    message = wrap(json.dumps(record), envelopes)
    only_parse_errors(lambda: parse_message(message))
    only_parse_errors(lambda: parse_document(message))


@FUZZ
@given(
    st.sampled_from(RECORD_SAMPLES),
    st.lists(st.sampled_from([sns_notification, sns_event, sqs_event]), max_size=6),
)
def test_valid_records_survive_envelopes_up_to_the_depth_bound(
    name: str, envelopes: list[Callable[[str], str]]
) -> None:
    message = wrap(json.dumps(SAMPLES[name]), envelopes)
    if "payload" in SAMPLES[name] and envelopes:  # records inside a queue or SNS message: forged (#11)
        only_parse_errors(lambda: parse_message(message, payloads=True))
    elif len(envelopes) <= 4:
        [failure] = parse_message(message, payloads=True)
        assert failure == parse_record(SAMPLES[name], payloads=True)
    else:
        only_parse_errors(lambda: parse_message(message))


# ---- round trip: valid fields in, the same fields out

digits = st.from_regex(r"[0-9]{1,60}", fullmatch=True)
names = st.from_regex(r"[A-Za-z0-9_.-]{1,40}", fullmatch=True).filter(lambda s: s.strip(".") != "")
regions = st.sampled_from(["us-east-1", "us-east-2", "eu-west-2", "ap-southeast-2", "us-gov-west-1"])
accounts = st.from_regex(r"[0-9]{12}", fullmatch=True)
shard_ids = st.from_regex(r"shardId-[A-Za-z0-9_-]{1,80}", fullmatch=True)
# DynamoDB Streams' own bounds (AWS accepts nothing else), with room for start/end +- a delta
ddb_digits = st.from_regex(r"[1-9][0-9]{21,38}", fullmatch=True)
ddb_shard_ids = st.from_regex(r"shardId-[A-Za-z0-9_-]{20,57}", fullmatch=True)
conditions = st.sampled_from(
    ["RetryAttemptsExhausted", "RecordAgeExceeded", "MaxRecordAgeExceeded"]
) | st.text(alphabet=st.characters(categories=["L", "N", "P"], include_characters=" "), max_size=256)
instants = st.datetimes(
    min_value=datetime(2001, 1, 1), max_value=datetime(2099, 12, 31), timezones=st.just(UTC)
)


@st.composite
def wire_times(draw: st.DrawFn) -> tuple[str, datetime]:
    """An ISO 8601 string as Lambda might write it, and the instant it means."""
    instant = draw(instants)
    millis = draw(st.booleans())
    instant = instant.replace(microsecond=instant.microsecond // 1000 * 1000 if millis else 0)
    offset = draw(st.sampled_from([None, 0, 60, -300, 330, 840, -720]))
    local = instant + timedelta(minutes=offset or 0)
    text = local.strftime("%Y-%m-%dT%H:%M:%S") + (f".{local.microsecond // 1000:03d}" if millis else "")
    if offset is None:
        text += "Z"
    else:
        sign = "+" if offset >= 0 else "-"
        text += f"{sign}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}"
    return text, instant


@st.composite
def valid_records(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """A valid invocation record and the Failure fields it must parse to."""
    kind = draw(
        st.sampled_from([StreamKind.DYNAMODB, StreamKind.KINESIS])
    )  # Kafka: tests/test_parse_kafka.py
    region, account = draw(regions), draw(accounts)
    partition = "aws-us-gov" if region.startswith("us-gov-") else "aws"  # a region lives in one partition
    if kind is StreamKind.DYNAMODB:
        label = draw(
            st.from_regex(r"[A-Za-z0-9:._-]{1,64}", fullmatch=True).filter(lambda s: s.strip(".") != "")
        )
        arn = f"arn:{partition}:dynamodb:{region}:{account}:table/{draw(names)}/stream/{label}"
        info_key = "DDBStreamBatchInfo"
    else:
        arn = f"arn:{partition}:kinesis:{region}:{account}:stream/{draw(names)}"
        info_key = "KinesisBatchInfo"
    numbers = ddb_digits if kind is StreamKind.DYNAMODB else digits
    start, end = sorted([draw(numbers), draw(numbers)], key=int)
    shard_id = draw(ddb_shard_ids if kind is StreamKind.DYNAMODB else shard_ids)
    info: dict[str, Any] = {
        "shardId": shard_id,
        "startSequenceNumber": start,
        "endSequenceNumber": end,
        "streamArn": arn,
    }
    expected: dict[str, Any] = {
        "kind": kind,
        "stream_arn": arn,
        "shard_id": shard_id,
        "start_sequence": start,
        "end_sequence": end,
        "batch_size": None,
        "first_arrival": None,
        "last_arrival": None,
        "timestamp": None,
        "condition": None,
    }
    if draw(st.booleans()):
        info["batchSize"] = expected["batch_size"] = draw(st.integers(min_value=1, max_value=10_000))
    for wire_key, field in (
        ("approximateArrivalOfFirstRecord", "first_arrival"),
        ("approximateArrivalOfLastRecord", "last_arrival"),
    ):
        if draw(st.booleans()):
            info[wire_key], expected[field] = draw(wire_times())
    origin = draw(st.sampled_from([Origin.LAMBDA_ESM, Origin.PIPES]))
    if origin is Origin.LAMBDA_ESM:
        source = f"arn:aws:lambda:{region}:{account}:function:{draw(names)}"
        context_key, source_key = "requestContext", "functionArn"
    else:
        source = f"arn:aws:pipes:{region}:{account}:pipe/{draw(names)}"
        context_key, source_key = "context", "partnerResourceArn"
    context: dict[str, Any] = {source_key: source}
    if draw(st.booleans()):
        context["condition"] = expected["condition"] = draw(conditions)
    record: dict[str, Any] = {context_key: context, "version": "1.0", info_key: info}
    if origin is Origin.LAMBDA_ESM:
        record["responseContext"] = {
            "statusCode": 200,
            "executedVersion": draw(st.sampled_from(["$LATEST", "3", "17"])),
            "functionError": draw(st.sampled_from(["Unhandled", "Handled", None])),
        }
    if draw(st.booleans()):
        record["timestamp"], expected["timestamp"] = draw(wire_times())
    expected.update(origin=origin, source_arn=source, raw=record, payload=None)
    if draw(st.booleans()):
        payload = {
            "Records": draw(
                st.lists(
                    st.dictionaries(st.text(max_size=8), finite_json, max_size=3), min_size=1, max_size=4
                )
            )
        }
        record["payload"] = json.dumps(payload) if draw(st.booleans()) else payload
        expected["payload"] = tuple(payload["Records"])
    return record, expected


@settings(max_examples=300, deadline=None)
@given(valid_records())
def test_round_trip(case: tuple[dict[str, Any], dict[str, Any]]) -> None:
    record, expected = case
    failure = parse_record(record, payloads=True)
    assert {name: getattr(failure, name) for name in expected} == expected
    assert failure.start <= failure.end
    for stamp in (failure.timestamp, failure.first_arrival, failure.last_arrival):
        assert stamp is None or stamp.tzinfo is not None


@FUZZ
@given(valid_records(), st.lists(st.sampled_from(ENVELOPES), max_size=3))
def test_round_trip_through_envelopes_and_documents(
    case: tuple[dict[str, Any], dict[str, Any]], envelopes: list[Callable[[str], str]]
) -> None:
    record, _ = case
    expected = parse_record(record, payloads=True)
    if "payload" in record and envelopes:  # records inside a queue or SNS message: forged (#11)
        only_parse_errors(lambda: parse_message(wrap(json.dumps(record), envelopes), payloads=True))
    else:
        assert parse_message(wrap(json.dumps(record), envelopes), payloads=True) == [expected]
    both = [expected, expected]
    assert parse_document(json.dumps([record, record]), payloads=True) == both
    assert parse_document(json.dumps(record) + "\n\n" + json.dumps(record) + "\n", payloads=True) == both


@FUZZ
@given(valid_records(), st.sampled_from(["startSequenceNumber", "endSequenceNumber"]), st.integers(1, 10**60))
def test_start_after_end_is_rejected(
    case: tuple[dict[str, Any], dict[str, Any]], which: str, delta: int
) -> None:
    record, expected = case
    info = record["DDBStreamBatchInfo" if expected["kind"] is StreamKind.DYNAMODB else "KinesisBatchInfo"]
    start, end = int(info["startSequenceNumber"]), int(info["endSequenceNumber"])
    if which == "startSequenceNumber":
        info[which] = str(end + delta)
    elif start >= delta:
        info[which] = str(start - delta)
    else:
        return
    if expected["kind"] is StreamKind.DYNAMODB and not 21 <= len(info[which]) <= 40:
        return  # outside what DynamoDB accepts: refused for its length, tested elsewhere
    try:
        parse_record(record)
    except ParseError as exc:
        assert "is greater than endSequenceNumber" in exc.reason
    else:
        raise AssertionError("start > end was accepted")
