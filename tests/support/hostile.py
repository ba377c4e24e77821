"""Hostile inputs: the cases of tests/events/hostile/cases.json, plus the huge ones built here."""

from __future__ import annotations

import copy
import json
from typing import Any

from tests.support.events import load_event

MANIFEST = load_event("hostile/cases.json")
SQS_MAX_BODY = 262_144
HUGE = SQS_MAX_BODY - 200  # "256 KB": as large as an SQS message body gets


def _build(case: dict[str, Any]) -> str:
    if "raw" in case:
        return str(case["raw"])
    if "body" in case:
        return json.dumps(case["body"])
    record = copy.deepcopy(MANIFEST["base"][case["base"]])
    for path, value in case.get("set", {}).items():
        *parents, last = path.split(".")
        target = record
        for part in parents:
            target = target[part]
        target[last] = value
    for path in case.get("delete", []):
        *parents, last = path.split(".")
        target = record
        for part in parents:
            target = target[part]
        del target[last]
    return json.dumps(record)


def _built_here() -> list[dict[str, Any]]:
    base = MANIFEST["base"]["ddb"]
    huge_shard = copy.deepcopy(base)
    huge_shard["DDBStreamBatchInfo"]["shardId"] = "shardId-"
    room = HUGE - len(json.dumps(huge_shard))
    huge_shard["DDBStreamBatchInfo"]["shardId"] += "a" * room
    depth = HUGE // 2 - 10
    return [
        {"name": "huge-body-text", "body_text": "x" * HUGE, "expect": "invalid JSON"},
        {
            "name": "huge-body-unknown-envelope",
            "body_text": json.dumps({"padding": "p" * (HUGE - 20)}),
            "expect": "unknown message",
        },
        {"name": "huge-shard-id", "body_text": json.dumps(huge_shard), "expect": "shardId is not a shard id"},
        {
            "name": "huge-nesting",
            "body_text": "[" * depth + "]" * depth,
            "expect": "invalid JSON: nested too deeply",
        },
        {
            "name": "huge-number",
            "body_text": '{"DDBStreamBatchInfo": {"batchSize": 1' + "0" * 5000 + "}}",
            "expect": "invalid JSON: Exceeds the limit",
        },
    ]


CASES = [{**case, "body_text": _build(case)} for case in MANIFEST["cases"]] + _built_here()
