"""What is pending: the failure queue, its dead-letter queue, the quarantine, the archive, and time left.

`replayer status` and the service's `/status` report the same document:

- ``queue`` / ``dead_letter_queue`` / ``quarantine`` (an SQS queue): messages visible, in
  flight and delayed, and the age of the oldest (CloudWatch's ``ApproximateAgeOfOldestMessage``,
  null where CloudWatch has no figure); the dead-letter queue comes from the queue's
  ``RedrivePolicy``; an S3 quarantine reports its objects.
- ``archive``: complete ranges by outcome (replayed, partial, expired), re-driven ones,
  damaged folders (a manifest that cannot be read or, with a manifest key, carries no valid
  MAC; or objects that contradict their manifest: each folder's objects are read back and
  checked, as `redrive` checks them), and records archived.
- ``nearest_expiry``: among ranges not yet saved, when the first one leaves its stream. Messages
  are never received to find out (that would count against their redrive policy), so the CLI
  estimates it from the oldest message's age and the shortest stream retention (24 hours:
  its records arrived before the invocation record was sent, so this may be late by the time the
  batch took to fail); the service knows the deadlines of the ranges it holds.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from botocore.exceptions import BotoCoreError, ClientError

from replayer.archive.read import check_ranges, find_ranges
from replayer.archive.store import StoreError
from replayer.aws import Clients, error_code

__all__ = ["SHORTEST_RETENTION", "archive_inventory", "gather_status", "queue_figures", "seconds_to_expiry"]

SHORTEST_RETENTION = timedelta(hours=24)  # DynamoDB Streams; Kinesis keeps 24 h or more

_COUNTS = {
    "visible": "ApproximateNumberOfMessages",
    "in_flight": "ApproximateNumberOfMessagesNotVisible",
    "delayed": "ApproximateNumberOfMessagesDelayed",
}


def _queue_region(url: str) -> str | None:
    host = urlsplit(url).hostname or ""
    parts = host.split(".")
    return parts[1] if len(parts) > 3 and parts[0] == "sqs" else None


async def queue_figures(clients: Clients, url: str) -> dict[str, Any]:
    """Counts and the oldest message's age of one SQS queue; `error` instead when it cannot be read."""
    region = _queue_region(url)
    sqs = await clients.get("sqs", region)
    try:
        answer = await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
    except (ClientError, BotoCoreError) as exc:
        return {"url": url, "error": _why(exc)}
    attributes = answer.get("Attributes", {})
    figures: dict[str, Any] = {"url": url}
    figures |= {name: int(attributes.get(attribute, 0)) for name, attribute in _COUNTS.items()}
    figures["oldest_age_seconds"] = await _oldest_age(clients, url, region)
    policy = attributes.get("RedrivePolicy")
    figures["dead_letter_arn"] = _dead_letter_arn(policy)
    return figures


def _dead_letter_arn(policy: Any) -> str | None:
    try:
        target = json.loads(policy).get("deadLetterTargetArn") if isinstance(policy, str) else None
    except (ValueError, AttributeError):
        return None
    return target if isinstance(target, str) else None


async def _oldest_age(clients: Clients, url: str, region: str | None) -> float | None:
    """CloudWatch's latest ApproximateAgeOfOldestMessage (SQS has no API for it); None when unknown."""
    name = url.rstrip("/").rsplit("/", 1)[-1]
    now = datetime.now(UTC)
    try:
        cloudwatch = await clients.get("cloudwatch", region)
        answer = await cloudwatch.get_metric_statistics(
            Namespace="AWS/SQS",
            MetricName="ApproximateAgeOfOldestMessage",
            Dimensions=[{"Name": "QueueName", "Value": name}],
            StartTime=now - timedelta(minutes=15),
            EndTime=now + timedelta(minutes=1),  # the latest minute is still filling
            Period=60,
            Statistics=["Maximum"],
        )
    except (ClientError, BotoCoreError):
        return None
    points = sorted(answer.get("Datapoints", []), key=lambda p: p["Timestamp"])
    return float(points[-1]["Maximum"]) if points else None


async def _dead_letter(clients: Clients, arn: str) -> dict[str, Any]:
    parts = arn.split(":")
    if len(parts) != 6:
        return {"arn": arn, "error": "not a queue ARN"}
    region, account, name = parts[3], parts[4], parts[5]
    sqs = await clients.get("sqs", region)
    try:
        url = (await sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account))["QueueUrl"]
    except (ClientError, BotoCoreError) as exc:
        return {"arn": arn, "error": _why(exc)}
    figures = await queue_figures(clients, url)
    figures.pop("dead_letter_arn", None)
    return {"arn": arn, **figures}


async def _quarantine(clients: Clients, where: str) -> dict[str, Any]:
    if where.startswith("s3://"):
        from replayer.archive.store import store_from_uri

        store = store_from_uri(where, clients)
        if store is None:
            return {"location": where, "error": "not an s3://BUCKET[/PREFIX]"}
        try:
            return {"location": where, "objects": len(await store.keys(""))}
        except StoreError as exc:
            return {"location": where, "error": str(exc)}
    figures = await queue_figures(clients, where)
    figures.pop("dead_letter_arn", None)
    return figures


async def archive_inventory(
    clients: Clients, where: str, *, manifest_key: str | None = None
) -> dict[str, Any]:
    """Complete ranges of an archive by outcome, re-driven ones, damaged folders, records."""
    from replayer.archive.mac import ManifestKey
    from replayer.archive.store import store_from_uri

    store = store_from_uri(where, clients)
    if store is None:
        return {"location": where, "error": "expected s3://BUCKET[/PREFIX] or file:DIR"}
    key = ManifestKey(clients, manifest_key) if manifest_key else None
    try:
        ranges, unreadable = await find_ranges(store, manifest_key=key)
        damaged = await check_ranges(store, ranges)
    except StoreError as exc:
        return {"location": where, "error": str(exc)}
    ranges = [r for r in ranges if r.folder not in damaged]
    counts = {"replayed": 0, "partial": 0, "expired": 0}
    for archived in ranges:
        kind = "replayed" if not archived.gaps else ("partial" if archived.count else "expired")
        counts[kind] += 1
    return {
        "location": where,
        "ranges": len(ranges),
        **counts,
        "redriven": sum(1 for r in ranges if r.markers),
        "at_risk": sum(1 for r in ranges if r.failure.at_risk),  # windows the at-risk watch archived
        "damaged": sum(1 for u in unreadable if not u.transient) + len(damaged),
        "unreadable": sum(1 for u in unreadable if u.transient),
        "records": sum(r.count for r in ranges),
    }


def seconds_to_expiry(
    oldest_ages: list[float | None], retention: timedelta = SHORTEST_RETENTION
) -> float | None:
    """Estimated seconds until the oldest pending range's records leave the stream (None: nothing known)."""
    ages = [a for a in oldest_ages if a is not None]
    if not ages:
        return None
    return retention.total_seconds() - max(ages)


async def gather_status(
    clients: Clients,
    *,
    queue: str | None = None,
    quarantine: str | None = None,
    archive: str | None = None,
    held_expiry: float | None = None,
    manifest_key: str | None = None,
) -> dict[str, Any]:
    """The status document (see the module's docstring). `held_expiry`: a service's own deadline figure."""
    document: dict[str, Any] = {"at": datetime.now(UTC).isoformat()}
    jobs: dict[str, Any] = {}
    if queue:
        jobs["queue"] = queue_figures(clients, queue)
    if quarantine:
        jobs["quarantine"] = _quarantine(clients, quarantine)
    if archive:
        jobs["archive"] = archive_inventory(clients, archive, manifest_key=manifest_key)
    results = await asyncio.gather(*jobs.values())
    document |= dict(zip(jobs, results, strict=True))
    ages: list[float | None] = []
    if "queue" in document:
        main: Mapping[str, Any] = document["queue"]
        ages.append(main.get("oldest_age_seconds"))
        dead_letter_arn = main.get("dead_letter_arn")
        if isinstance(dead_letter_arn, str):
            document["dead_letter_queue"] = await _dead_letter(clients, dead_letter_arn)
            ages.append(document["dead_letter_queue"].get("oldest_age_seconds"))
    estimate = seconds_to_expiry(ages)
    if held_expiry is not None and math.isfinite(held_expiry):
        seconds, basis = held_expiry, "deadlines of the ranges this process holds"
        if estimate is not None and estimate < seconds:
            seconds, basis = estimate, "the oldest message's age and a 24 h retention"
    elif estimate is not None:
        seconds, basis = estimate, "the oldest message's age and a 24 h retention (an estimate)"
    else:
        seconds, basis = None, "unknown: no pending range has a known age"
    document["nearest_expiry"] = {
        "seconds": seconds,
        "at": datetime.fromtimestamp(time.time() + seconds, UTC).isoformat() if seconds is not None else None,
        "basis": basis,
    }
    return document


def _why(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        return error_code(exc) or str(exc)
    return str(exc)
