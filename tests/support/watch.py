"""What the at-risk watch, `audit` and `why` look at, prepared in the emulator with plain boto3:
functions and their stream mappings, Lambda's metrics (PutMetricData), a function's log lines."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Any

from tests.support.aws import client, unique

EMPTY_ZIP = b"PK\x05\x06" + b"\0" * 18


def function(endpoint: str, prefix: str = "consumer") -> str:
    """A function in the emulator (never invoked); its ARN."""
    iam = client("iam", endpoint)
    role = iam.create_role(RoleName=unique("role"), AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    answer = client("lambda", endpoint).create_function(
        FunctionName=unique(prefix),
        Runtime="python3.12",
        Role=role,
        Handler="h.h",
        Code={"ZipFile": EMPTY_ZIP},
    )
    arn: str = answer["FunctionArn"]
    return arn


def mapping(endpoint: str, function_arn: str, stream_arn: str, **extra: Any) -> str:
    """A stream mapping of the function (create it AFTER putting records: the emulator would invoke
    the function for records put later); its UUID."""
    uuid: str = client("lambda", endpoint).create_event_source_mapping(
        EventSourceArn=stream_arn, FunctionName=function_arn, StartingPosition="TRIM_HORIZON", **extra
    )["UUID"]
    return uuid


def put_metric(
    endpoint: str, name: str, value: float, dimensions: dict[str, str], unit: str = "Count"
) -> None:
    """One datapoint of an AWS/Lambda metric, now, as Lambda would publish it."""
    client("cloudwatch", endpoint).put_metric_data(
        Namespace="AWS/Lambda",
        MetricData=[
            {
                "MetricName": name,
                "Dimensions": [{"Name": k, "Value": v} for k, v in dimensions.items()],
                "Timestamp": datetime.now(UTC),
                "Value": value,
                "Unit": unit,
            }
        ],
    )


def iterator_age(endpoint: str, function_arn: str, uuid: str, hours: float) -> None:
    """IteratorAge of the mapping (milliseconds), `hours` old."""
    put_metric(
        endpoint,
        "IteratorAge",
        hours * 3600 * 1000,
        {"FunctionName": function_arn.split(":")[6], "EventSourceMappingUUID": uuid},
        "Milliseconds",
    )


def log_lines(endpoint: str, group: str, stream: str, lines: list[tuple[datetime, str]]) -> None:
    """Log events in `group`/`stream` (both created when missing)."""
    logs = client("logs", endpoint)
    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName=stream)
    logs.put_log_events(
        logGroupName=group,
        logStreamName=stream,
        logEvents=[{"timestamp": int(t.timestamp() * 1000), "message": m} for t, m in lines],
    )
