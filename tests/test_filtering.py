"""Lambda's event-filtering rules: every example of AWS's filtering documentation, properties,
and a cross-check against the EventBridge pattern matcher of the emulator (moto, over HTTP)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replayer.filtering import FilterCriteria, Pattern, PatternError, filter_document
from replayer.model import StreamKind, StreamRecord
from tests.support.aws import client, unique

PROPS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def matches(pattern: Any, document: Any) -> bool:
    return Pattern.parse(json.dumps(pattern) if not isinstance(pattern, str) else pattern).matches(document)


# --------------------------------------------------------------------------- AWS's examples

# Lambda's "Filter rule syntax" table (invocation-eventfiltering): rule, a record it admits,
# a record it refuses.
RULE_TABLE = [
    ("null", {"UserID": [None]}, {"UserID": None}, {"UserID": "u1"}),
    ("empty", {"LastName": [""]}, {"LastName": ""}, {"LastName": "Doe"}),
    ("equals", {"Name": ["Alice"]}, {"Name": "Alice"}, {"Name": "alice"}),
    (
        "equals-ignore-case",
        {"Name": [{"equals-ignore-case": "alice"}]},
        {"Name": "ALICE"},
        {"Name": "Alicia"},
    ),
    (
        "and",
        {"Location": ["New York"], "Day": ["Monday"]},
        {"Location": "New York", "Day": "Monday"},
        {"Location": "New York", "Day": "Tuesday"},
    ),
    ("or", {"PaymentType": ["Credit", "Debit"]}, {"PaymentType": "Debit"}, {"PaymentType": "Cash"}),
    (
        "or-multiple-fields",
        {"$or": [{"Location": ["New York"]}, {"Day": ["Monday"]}]},
        {"Location": "Boston", "Day": "Monday"},
        {"Location": "Boston", "Day": "Friday"},
    ),
    ("not", {"Weather": [{"anything-but": ["Raining"]}]}, {"Weather": "Sunny"}, {"Weather": "Raining"}),
    ("numeric-equals", {"Price": [{"numeric": ["=", 100]}]}, {"Price": 100}, {"Price": 101}),
    ("numeric-range", {"Price": [{"numeric": [">", 10, "<=", 20]}]}, {"Price": 20}, {"Price": 10}),
    ("exists", {"ProductName": [{"exists": True}]}, {"ProductName": "x"}, {"Other": "x"}),
    ("does-not-exist", {"ProductName": [{"exists": False}]}, {"Other": "x"}, {"ProductName": "x"}),
    ("begins-with", {"Region": [{"prefix": "us-"}]}, {"Region": "us-east-1"}, {"Region": "eu-west-1"}),
    ("ends-with", {"FileName": [{"suffix": ".png"}]}, {"FileName": "cat.png"}, {"FileName": "cat.jpg"}),
]


@pytest.mark.parametrize(("name", "rule", "admitted", "refused"), RULE_TABLE, ids=[r[0] for r in RULE_TABLE])
def test_lambda_rule_syntax_table(name: str, rule: Any, admitted: Any, refused: Any) -> None:
    assert matches(rule, admitted)
    assert not matches(rule, refused)


def test_lambda_numbers_compare_by_representation_in_equality() -> None:
    """ "For numbers, Lambda also uses string representation: 300, 300.0 and 3.0e2 are not equal"."""
    pattern = Pattern.parse('{"n": [300]}')
    assert pattern.matches({"n": 300})
    assert not Pattern.parse('{"n": [300]}').matches(json.loads('{"n": 300.0}'))
    assert not pattern.matches(filter_document(StreamKind.DYNAMODB, b'{"n": 3.0e2}'))
    assert Pattern.parse('{"n": [{"numeric": ["=", 300]}]}').matches(
        filter_document(StreamKind.DYNAMODB, b'{"n": 3.0e2}')
    )


# The DynamoDB record of Lambda's "Using event filtering with a DynamoDB event source".
DDB_DOC_RECORD = {
    "eventID": "1",
    "eventVersion": "1.0",
    "eventName": "INSERT",
    "dynamodb": {
        "ApproximateCreationDateTime": "1678831218.0",
        "Keys": {"CustomerName": {"S": "AnyCompany Industries"}},
        "NewImage": {
            "AccountManager": {"S": "Pat Candella"},
            "PaymentTerms": {"S": "60 days"},
            "CustomerName": {"S": "AnyCompany Industries"},
        },
        "SequenceNumber": "111",
        "SizeBytes": 26,
        "StreamViewType": "NEW_IMAGE",
    },
}


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ({"dynamodb": {"Keys": {"CustomerName": {"S": ["AnyCompany Industries"]}}}}, True),
        ({"dynamodb": {"NewImage": {"AccountManager": {"S": ["Pat Candella", "Shirley Rodriguez"]}}}}, True),
        ({"dynamodb": {"NewImage": {"AccountManager": {"S": ["Shirley Rodriguez"]}}}}, False),
        (
            {
                "dynamodb": {
                    "NewImage": {
                        "AccountManager": {"S": ["Pat Candella"]},
                        "PaymentTerms": {"S": ["60 days"]},
                    }
                }
            },
            True,
        ),
        ({"dynamodb": {"NewImage": {"AccountManager": {"S": [{"exists": True}]}}}}, True),
        ({"dynamodb": {"NewImage": {"AccountManager": {"S": [{"exists": False}]}}}}, False),
        ({"dynamodb": {"NewImage": {"Region": {"S": [{"exists": False}]}}}}, True),
        ({"dynamodb": {"NewImage": {"PaymentTerms": {"S": [{"prefix": "60"}]}}}}, True),
        ({"dynamodb": {"NewImage": {"PaymentTerms": {"S": [{"anything-but": ["60 days"]}]}}}}, False),
        (
            {
                "eventName": ["INSERT"],
                "dynamodb": {"Keys": {"CustomerName": {"S": [{"suffix": "Industries"}]}}},
            },
            True,
        ),
        ({"eventName": ["MODIFY", "REMOVE"]}, False),
        # a DynamoDB number is a JSON string in the record: `numeric` never matches it
        ({"dynamodb": {"SizeBytes": [{"numeric": [">", 20]}]}}, True),
        ({"dynamodb": {"ApproximateCreationDateTime": [{"numeric": [">", 0]}]}}, False),
    ],
)
def test_dynamodb_examples(pattern: Any, expected: bool) -> None:
    record = StreamRecord("111", json.dumps(DDB_DOC_RECORD).encode())
    assert FilterCriteria.of(json.dumps(pattern)).admits(StreamKind.DYNAMODB, record) is expected


def test_multi_level_dynamodb_example() -> None:
    record = {
        "dynamodb": {
            "Keys": {"Id": {"N": "101"}},
            "NewImage": {"Message": {"S": "New item!"}, "Id": {"N": "101"}},
            "SequenceNumber": "111",
            "SizeBytes": 26,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        }
    }
    assert FilterCriteria.of('{"dynamodb": {"Keys": {"Id": {"N": ["101"]}}}}').admits(
        StreamKind.DYNAMODB, record
    )
    assert not FilterCriteria.of('{"dynamodb": {"Keys": {"Id": {"N": ["102"]}}}}').admits(
        StreamKind.DYNAMODB, record
    )


def kinesis_record(data: bytes | Any, partition_key: str = "1") -> dict[str, Any]:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": partition_key,
            "sequenceNumber": "49590338271490256608559692538361571095921575989136588898",
            "data": base64.b64encode(raw).decode(),
            "approximateArrivalTimestamp": 1545084650.987,
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": "shardId-000000000006:49590338271490256608559692538361571095921575989136588898",
        "eventName": "aws:kinesis:record",
        "awsRegion": "us-east-2",
        "eventSourceARN": "arn:aws:kinesis:us-east-2:123456789012:stream/lambda-stream",
    }


def test_kinesis_examples() -> None:
    order = kinesis_record({"record": 12345, "order": {"type": "buy", "stock": "ANYCO", "quantity": 1000}})
    buy = FilterCriteria.of('{ "data" : { "order" : { "type" : [ "buy" ] } } }')
    sell = FilterCriteria.of('{ "data" : { "order" : { "type" : [ "sell" ] } } }')
    assert buy.admits(StreamKind.KINESIS, order)
    assert not sell.admits(StreamKind.KINESIS, order)
    # the record printed in the documentation, its data as base64 there
    doc = {
        "kinesis": {
            "partitionKey": "1",
            "data": "eyJSZWNvcmROdW1iZXIiOiAiMDAwMSIsICJUaW1lU3RhbXAiOiAieXl5eS1tbS1kZFRoaDptbTpzcyIsICJSZXF1ZXN0Q29kZSI6ICJBQUFBIn0=",
        }
    }
    assert FilterCriteria.of('{"data": {"RequestCode": ["AAAA"]}}').admits(StreamKind.KINESIS, doc)
    assert not FilterCriteria.of('{"data": {"RequestCode": ["BBBB"]}}').admits(StreamKind.KINESIS, doc)


def test_kinesis_metadata_and_data_example() -> None:
    """The general page's example: partitionKey (metadata) and data.Location; data.Temperature ranges."""
    la = kinesis_record({"City": "Los Angeles", "Location": "Los Angeles", "Temperature": 55})
    both = FilterCriteria.of('{ "partitionKey": [ "1" ], "data": { "Location": [ "Los Angeles" ] }}')
    assert both.admits(StreamKind.KINESIS, la)
    assert not both.admits(StreamKind.KINESIS, kinesis_record({"Location": "Los Angeles"}, partition_key="2"))
    warm = FilterCriteria.of('{ "data": { "Temperature": [ {"numeric": [ ">", 50, "<=", 60 ] } ]}}')
    assert warm.admits(StreamKind.KINESIS, la)
    assert not warm.admits(StreamKind.KINESIS, kinesis_record({"Temperature": 61}))


def test_kinesis_data_that_is_not_json() -> None:
    """Non-JSON data with a data pattern: dropped; with only metadata patterns: filtered on those."""
    plain = kinesis_record(b"hello, not json")
    assert not FilterCriteria.of('{"data": {"a": [{"exists": false}]}}').admits(StreamKind.KINESIS, plain)
    assert not FilterCriteria.of('{"data": [{"exists": false}]}').admits(StreamKind.KINESIS, plain)
    assert FilterCriteria.of('{"partitionKey": ["1"]}').admits(StreamKind.KINESIS, plain)
    assert not FilterCriteria.of('{"partitionKey": ["2"]}').admits(StreamKind.KINESIS, plain)
    kpl = kinesis_record(b"\xf3\x89\x9a\xc2" + b"\x00" * 20)  # KPL aggregation magic: binary, never JSON
    assert not FilterCriteria.of('{"data": {"a": [{"exists": false}]}}').admits(StreamKind.KINESIS, kpl)


def test_console_example_and_filters_are_ored() -> None:
    criteria = FilterCriteria.from_api(
        {"Filters": [{"Pattern": '{ "a" : [ 1, 2 ] }'}, {"Pattern": '{"b": ["x"]}'}]}
    )
    assert criteria.matches({"a": 2}) and criteria.matches({"b": "x"})
    assert not criteria.matches({"a": 3, "b": "y"})
    assert FilterCriteria.from_api(None).matches({"anything": 1})
    assert FilterCriteria.from_api({}).admits(StreamKind.DYNAMODB, b"not even json")
    assert criteria.describe() == ['{ "a" : [ 1, 2 ] }', '{"b": ["x"]}']


# EventBridge's "Content filtering in event patterns" (Lambda uses the same rules).
EC2_EVENT = {
    "version": "0",
    "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
    "detail-type": "EC2 Instance State-change Notification",
    "source": "aws.ec2",
    "account": "111122223333",
    "time": "2017-10-02T18:43:48Z",
    "region": "us-west-1",
    "resources": ["arn:aws:ec2:us-west-1:123456789012:instance/i-1234567890abcdef0"],
    "detail": {
        "instance-id": "i-1234567890abcdef0",
        "state": "terminated",
        "c-count": 5,
        "d-count": 3,
        "x-limit": 301.8,
        "sourceIPAddress": "10.0.0.123",
        "FilePath": "/var/lib/tmp/myfile",
        "responseElements": None,
        "eventVersion": "",
    },
}

EVENTBRIDGE_EXAMPLES = [
    ({"time": [{"prefix": "2017-10-02"}]}, True),
    ({"source": [{"prefix": {"equals-ignore-case": "AWS."}}]}, True),
    ({"detail": {"FilePath": [{"suffix": "/myfile"}]}}, True),
    ({"detail": {"FilePath": [{"suffix": {"equals-ignore-case": "/MYFILE"}}]}}, True),
    ({"detail": {"state": [{"anything-but": "initializing"}]}}, True),
    ({"detail": {"state": [{"anything-but": ["stopped", "overloaded"]}]}}, True),
    ({"detail": {"state": [{"anything-but": ["terminated"]}]}}, False),
    ({"detail": {"c-count": [{"anything-but": 123}]}}, True),
    ({"detail": {"c-count": [{"anything-but": [100, 200, 5]}]}}, False),
    ({"detail": {"state": [{"anything-but": {"prefix": "init"}}]}}, True),
    ({"detail": {"state": [{"anything-but": {"prefix": "term"}}]}}, False),
    ({"detail": {"instance-id": [{"anything-but": {"suffix": "1234"}}]}}, True),
    ({"detail": {"instance-id": [{"anything-but": {"suffix": "cdef0"}}]}}, False),
    ({"detail": {"state": [{"anything-but": {"equals-ignore-case": ["Stopped", "OverLoaded"]}}]}}, True),
    ({"detail": {"state": [{"anything-but": {"equals-ignore-case": ["TERMINATED"]}}]}}, False),
    ({"detail": {"FilePath": [{"anything-but": {"wildcard": "*/lib/*"}}]}}, False),
    ({"detail": {"FilePath": [{"anything-but": {"wildcard": "*/bin/*"}}]}}, True),
    (
        {
            "detail": {
                "c-count": [{"numeric": [">", 0, "<=", 5]}],
                "d-count": [{"numeric": ["<", 10]}],
                "x-limit": [{"numeric": ["=", 3.018e2]}],
            }
        },
        True,
    ),
    ({"detail": {"sourceIPAddress": [{"cidr": "10.0.0.0/24"}]}}, True),
    ({"detail": {"sourceIPAddress": [{"cidr": "10.0.1.0/24"}]}}, False),
    ({"detail": {"state": [{"exists": True}]}}, True),
    ({"detail": {"missing": [{"exists": False}]}}, True),
    ({"detail": [{"exists": True}]}, False),  # exists works on leaves, not on objects
    ({"detail-type": [{"equals-ignore-case": "ec2 instance state-change notification"}]}, True),
    ({"detail": {"FilePath": [{"wildcard": "/var/*/myfile"}]}}, True),
    ({"detail": {"FilePath": [{"wildcard": "/usr/*"}]}}, False),
    ({"resources": [{"wildcard": "arn:aws:ec2:*:123456789012:instance/*"}]}, True),
    (
        {
            "time": [{"prefix": "2017-10-02"}],
            "detail": {
                "state": [{"anything-but": "initializing"}],
                "c-count": [{"numeric": [">", 0, "<=", 5]}],
                "d-count": [{"numeric": ["<", 10]}],
                "x-limit": [{"anything-but": [100, 200, 300]}],
            },
        },
        True,
    ),
    (
        {
            "detail": {
                "$or": [
                    {"c-count": [{"numeric": [">", 0, "<=", 1]}]},
                    {"d-count": [{"numeric": ["<", 10]}]},
                    {"x-limit": [{"numeric": ["=", 3.018e2]}]},
                ]
            }
        },
        True,
    ),
    ({"source": ["aws.ec2"], "$or": [{"detail": {"state": ["running"]}}, {"region": ["eu-west-1"]}]}, False),
    ({"source": ["aws.ec2"], "$or": [{"detail": {"state": ["running"]}}, {"region": ["us-west-1"]}]}, True),
    (
        {"resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-b188560f", EC2_EVENT["resources"][0]]},
        True,
    ),
    ({"detail": {"responseElements": [None]}}, True),
    ({"detail": {"eventVersion": [""]}}, True),
    ({"detail": {"responseElements": [""]}}, False),
]


@pytest.mark.parametrize(("pattern", "expected"), EVENTBRIDGE_EXAMPLES)
def test_eventbridge_content_filtering_examples(pattern: Any, expected: bool) -> None:
    assert matches(pattern, EC2_EVENT) is expected


def test_arrays_of_objects_match_element_by_element() -> None:
    event = {"items": [{"kind": "a", "n": 1}, {"kind": "b", "n": 2}]}
    assert matches({"items": {"kind": ["a"], "n": [1]}}, event)
    assert not matches({"items": {"kind": ["a"], "n": [2]}}, event)  # fields of two different elements
    assert matches({"items": {"kind": ["b"]}}, event)


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("[1]", "must be a JSON object"),
        ('{"a": 1}', "must be an object or a list"),
        ('{"a": []}', "empty lists"),
        ('{"a": [{"numeric": [">", "x"]}]}', "needs a number"),
        ('{"a": [{"numeric": [">", 1, ">", 2]}]}', "at most one lower"),
        ('{"a": [{"numeric": ["~", 1]}]}', "unknown operator"),
        ('{"a": [{"wildcard": "a**b"}]}', "consecutive"),
        ('{"a": [{"regex": "x"}]}', "unknown operator"),
        ('{"a": [{"exists": "yes"}]}', "true or false"),
        ('{"$or": [{"a": [1]}]}', "at least two"),
        ('{"a": [{"cidr": "not-an-ip"}]}', "cidr"),
        ('{"a": [{"anything-but": []}]}', "anything-but"),
        ('{"a": [{"prefix": 1}]}', "prefix takes a string"),
        ("{not json", "not JSON"),
    ],
)
def test_bad_patterns_say_why(pattern: str, message: str) -> None:
    with pytest.raises(PatternError, match=message):
        Pattern.parse(pattern)


def test_bad_filter_criteria_name_the_filter() -> None:
    with pytest.raises(PatternError, match=r"Filters\[1\]"):
        FilterCriteria.from_api({"Filters": [{"Pattern": '{"a": [1]}'}, {"Pattern": '{"a": 1}'}]})


# --------------------------------------------------------------------------- properties

KEYS = st.sampled_from(["a", "b", "c", "data", "name"])
STRINGS = st.text(alphabet="abcAB-._/ *\\", max_size=6)
SCALARS = st.one_of(STRINGS, st.integers(-1000, 1000), st.booleans(), st.none())
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(KEYS, inner, max_size=3)),
    max_leaves=12,
)
DOCUMENTS = st.dictionaries(KEYS, JSON_VALUES, max_size=4)


def self_pattern(document: dict[str, Any]) -> dict[str, Any]:
    """A pattern made of a document's own values (objects inside lists left out)."""
    out: dict[str, Any] = {}
    for key, value in document.items():
        if isinstance(value, dict):
            if inner := self_pattern(value):
                out[key] = inner
        elif isinstance(value, list):
            scalars = [v for v in value if not isinstance(v, dict | list)]
            if scalars:
                out[key] = scalars
        else:
            out[key] = [value]
    return out


@PROPS
@given(DOCUMENTS)
def test_a_document_matches_a_pattern_of_its_own_values(document: dict[str, Any]) -> None:
    pattern = self_pattern(document)
    if pattern:
        assert matches(pattern, document)


@PROPS
@given(DOCUMENTS, KEYS)
def test_exists_true_and_false_are_complements(document: dict[str, Any], key: str) -> None:
    present = matches({key: [{"exists": True}]}, document)
    absent = matches({key: [{"exists": False}]}, document)
    assert present != absent


@PROPS
@given(st.one_of(STRINGS, st.integers(-50, 50)), st.one_of(STRINGS, st.integers(-50, 50)))
def test_anything_but_is_the_complement_of_equality_on_a_present_scalar(value: Any, excluded: Any) -> None:
    document = {"a": value}
    assert matches({"a": [{"anything-but": excluded}]}, document) != matches({"a": [excluded]}, document)


@PROPS
@given(st.integers(-100, 100), st.integers(-100, 100), st.integers(-100, 100))
def test_numeric_ranges_agree_with_arithmetic(x: int, low: int, high: int) -> None:
    assert matches({"a": [{"numeric": [">=", low, "<", high]}]}, {"a": x}) == (low <= x < high)
    assert matches({"a": [{"numeric": ["=", low]}]}, {"a": x}) == (x == low)
    assert not matches({"a": [{"numeric": [">", -1000]}]}, {"a": str(x)})  # strings are not numbers


@PROPS
@given(STRINGS, STRINGS)
def test_prefix_suffix_and_wildcard_agree_with_str(value: str, part: str) -> None:
    doc = {"a": value}
    assert matches({"a": [{"prefix": part}]}, doc) == value.startswith(part)
    assert matches({"a": [{"suffix": part}]}, doc) == value.endswith(part)
    literal = part.replace("\\", "\\\\").replace("*", "\\*")
    assert matches({"a": [{"wildcard": literal}]}, doc) == (value == part)
    assert matches({"a": [{"wildcard": "*" + literal}]}, doc) == value.endswith(part)
    assert matches({"a": [{"equals-ignore-case": part}]}, doc) == (value.lower() == part.lower())


@PROPS
@given(DOCUMENTS, DOCUMENTS, DOCUMENTS)
def test_or_and_filters_are_disjunctions(
    document: dict[str, Any], one: dict[str, Any], two: dict[str, Any]
) -> None:
    p1, p2 = self_pattern(one), self_pattern(two)
    if not p1 or not p2:
        return
    either = matches(p1, document) or matches(p2, document)
    assert matches({"$or": [p1, p2]}, document) == either
    assert FilterCriteria.of(json.dumps(p1), json.dumps(p2)).matches(document) == either


@PROPS
@given(DOCUMENTS, DOCUMENTS)
def test_kinesis_data_is_matched_as_its_json(data: dict[str, Any], other: dict[str, Any]) -> None:
    pattern = self_pattern(other) or {"a": [{"exists": True}]}
    criteria = FilterCriteria.of(json.dumps({"data": pattern}))
    assert criteria.admits(StreamKind.KINESIS, kinesis_record(data)) == matches(pattern, data)


@PROPS
@given(DOCUMENTS, DOCUMENTS, KEYS)
def test_unrelated_fields_never_change_the_answer(
    document: dict[str, Any], pattern_of: dict[str, Any], extra: str
) -> None:
    pattern = self_pattern(pattern_of)
    if not pattern or extra in pattern:
        return
    wider = {**document, extra: "unrelated"}
    if extra in document:
        return
    assert matches(pattern, wider) == matches(pattern, document)


# --------------------------------------------------------------------------- the emulator

# Patterns and events where moto's EventBridge matcher implements the documented rules:
# no arrays of objects, no numbers written two ways, no empty objects, no booleans near numbers.
CROSS_PATTERNS: list[Any] = [p for p, _ in EVENTBRIDGE_EXAMPLES] + [
    {"detail": {"state": ["terminated", "running"]}},
    {"detail": {"tags": ["blue"]}},
    {"detail": {"tags": [{"prefix": "gr"}]}},
    {"detail": {"tags": [{"anything-but": ["blue", "green"]}]}},
    {"detail": {"size": [{"numeric": [">=", 10, "<", 20]}]}},
    {"detail": {"size": [{"exists": False}]}},
    {"detail": {"name": [{"wildcard": "*.png"}]}},
    {"detail": {"name": [{"equals-ignore-case": "CAT.PNG"}]}},
    {"detail": {"nested": {"inner": [{"prefix": "x"}]}}},
    {"detail": {"nested": {"inner": [{"exists": False}]}}},
    {"detail": {"$or": [{"size": [{"numeric": ["<", 0]}]}, {"name": [{"suffix": ".jpg"}]}]}},
    {"detail": {"flag": [True]}},
    {"detail": {"nothing": [None]}},
]
CROSS_EVENTS: list[dict[str, Any]] = [
    EC2_EVENT,
    {
        **EC2_EVENT,
        "time": "2020-01-01T00:00:00Z",
        "region": "eu-west-1",
        "detail": {"state": "running", "c-count": 0},
    },
    {
        **EC2_EVENT,
        "detail": {"tags": ["blue", "green"], "size": 15, "name": "cat.png", "nested": {"inner": "xyz"}},
    },
    {**EC2_EVENT, "detail": {"tags": ["grey"], "size": 25, "name": "dog.jpg", "flag": True, "nothing": None}},
    {**EC2_EVENT, "detail": {"size": -1, "name": "CAT.PNG", "nested": {"other": 1}, "flag": False}},
]


def test_matches_the_emulators_eventbridge_patterns(moto_endpoint: str) -> None:
    """Every (pattern, event) pair decided the same way here and by moto's rules, over HTTP.

    One rule per pattern, told apart by `detail-type`; every event is sent once per rule,
    and what reaches the rules' queue is what moto matched.
    """
    events, sqs = client("events", moto_endpoint), client("sqs", moto_endpoint)
    bus = unique("bus")
    events.create_event_bus(Name=bus)
    queue = sqs.create_queue(QueueName=unique("matched"))["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    # moto sets account, time, region and id itself: only patterns on the fields it takes from us
    patterns = [p for p in CROSS_PATTERNS if set(p) <= {"detail", "source", "resources", "$or"}]
    patterns = [
        p for p in patterns if all(set(b) <= {"detail", "source", "resources"} for b in p.get("$or", []))
    ]
    for i, pattern in enumerate(patterns):
        rule = f"case-{i}"
        events.put_rule(
            Name=rule, EventBusName=bus, EventPattern=json.dumps({**pattern, "detail-type": [rule]})
        )
        events.put_targets(Rule=rule, EventBusName=bus, Targets=[{"Id": "q", "Arn": queue_arn}])
    expected: set[tuple[str, str]] = set()
    entries = []
    for i, pattern in enumerate(patterns):
        for j, event in enumerate(CROSS_EVENTS):
            entry = {"source": event["source"], "detail-type": f"case-{i}", "resources": event["resources"]}
            entry["detail"] = {**event["detail"], "__event": j}
            if matches({**pattern, "detail-type": [f"case-{i}"]}, entry):
                expected.add((f"case-{i}", str(j)))
            entries.append(
                {
                    "Source": entry["source"],
                    "DetailType": entry["detail-type"],
                    "Detail": json.dumps(entry["detail"]),
                    "Resources": entry["resources"],
                    "EventBusName": bus,
                }
            )
    for k in range(0, len(entries), 10):
        assert not events.put_events(Entries=entries[k : k + 10])["FailedEntryCount"]
    seen: set[tuple[str, str]] = set()
    while True:
        got = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
        if not got:
            break
        for message in got:
            body = json.loads(message["Body"])
            seen.add((body["detail-type"], str(body["detail"]["__event"])))
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
    assert len(expected) > 10 and len(expected) < len(entries) / 2  # the corpus has both answers
    assert seen == expected
