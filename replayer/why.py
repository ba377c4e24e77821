"""`replayer why RANGE_ID`: the failed batch joined with its function's logs, by request id.

The archive keeps the invocation record of every range (the manifest's `invocation_record`):
its `requestContext.requestId` is the last failed invocation's, `functionArn` the function,
`timestamp` when Lambda gave up. The function's log group (`/aws/lambda/NAME`) is searched with
FilterLogEvents for that request id, from 16 minutes before the timestamp (the longest
invocation, and a minute) to 2 minutes after: the runtime's START line gives the version and the
log stream; then every line of that stream between START and END is the invocation's (one
execution environment runs one invocation at a time). When no line names the request, the
group's lines of that window are shown, said to be such. At most `lines` lines, 10 pages a call.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from replayer.archive import ArchivedRange, Store
from replayer.archive.read import find_ranges
from replayer.aws import Clients, error_code

__all__ = ["LogLine", "Why", "WhyError", "explain", "find_range"]

BEFORE = timedelta(minutes=16)
AFTER = timedelta(minutes=2)
DEFAULT_LINES = 50
_PAGES = 10
_VERSION = re.compile(r"^START RequestId: \S+ Version: (\S+)")
_FUNCTION_ARN = re.compile(r"^arn:aws[a-z-]*:lambda:([a-z0-9-]+):(\d{12}):function:([A-Za-z0-9_-]+)")
_DENIED = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "UnrecognizedClientException"}


class WhyError(Exception):
    """Why the logs cannot be shown, in one line."""


@dataclass(frozen=True, slots=True)
class LogLine:
    timestamp: datetime
    stream: str
    message: str

    def describe(self) -> dict[str, Any]:
        return {"timestamp": self.timestamp.isoformat(), "stream": self.stream, "message": self.message}


@dataclass
class Why:
    """A failed range, its invocation, and the log lines of that invocation."""

    range_id: str
    archived: ArchivedRange
    request_id: str | None
    function_arn: str | None
    version: str | None
    condition: str | None
    function_error: str | None
    failed_at: datetime | None
    log_group: str | None
    window: tuple[datetime, datetime] | None
    lines: list[LogLine] = field(default_factory=list)
    truncated: bool = False
    note: str = ""

    def describe(self) -> dict[str, Any]:
        failure = self.archived.failure
        return {
            "range_id": self.range_id,
            "stream_arn": failure.stream_arn,
            "shard_id": failure.shard_id,
            "start_sequence": failure.start_sequence,
            "end_sequence": failure.end_sequence,
            "request_id": self.request_id,
            "function": self.function_arn,
            "version": self.version,
            "condition": self.condition,
            "function_error": self.function_error,
            "failed_at": self.failed_at.isoformat() if self.failed_at else None,
            "log_group": self.log_group,
            "window": [t.isoformat() for t in self.window] if self.window else None,
            "lines": [line.describe() for line in self.lines],
            "truncated": self.truncated,
            "note": self.note,
        }


async def find_range(store: Store, range_id: str) -> ArchivedRange:
    """The archived range with this id (or the one id it is the unique prefix of, 8 characters at
    least); WhyError when there is none or several."""
    ranges, _ = await find_ranges(store)
    wanted = range_id.strip().lower()
    exact = [r for r in ranges if r.failure.range_id == wanted]
    if exact:
        return exact[0]
    matches = [r for r in ranges if len(wanted) >= 8 and r.failure.range_id.startswith(wanted)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise WhyError(f"{range_id} names {len(matches)} ranges of {store.uri}: give more of the id")
    raise WhyError(f"no range {range_id} in {store.uri} (replayer status --from lists what it holds)")


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _time(value: Any) -> datetime | None:
    text = _text(value)
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


async def explain(clients: Clients, store: Store, range_id: str, *, lines: int = DEFAULT_LINES) -> Why:
    """The range's failed invocation and its log lines. WhyError says, in one line, what stops it."""
    archived = await find_range(store, range_id)
    failure = archived.failure
    raw: Mapping[str, Any] = failure.raw
    request: Mapping[str, Any] = raw.get("requestContext") or {}
    response: Mapping[str, Any] = raw.get("responseContext") or {}
    why = Why(
        range_id=failure.range_id,
        archived=archived,
        request_id=_text(request.get("requestId")),
        function_arn=_text(request.get("functionArn")) or failure.source_arn,
        version=_text(response.get("executedVersion")),
        condition=_text(request.get("condition")) or failure.condition,
        function_error=_text(response.get("functionError")),
        failed_at=_time(raw.get("timestamp")) or failure.timestamp,
        log_group=None,
        window=None,
    )
    if failure.at_risk:
        why.note = (
            "archived by the at-risk watch before any invocation failed on it: no failed invocation to show"
        )
        return why
    function = _FUNCTION_ARN.match(why.function_arn or "")
    if why.request_id is None or function is None or why.failed_at is None:
        why.note = (
            "the invocation record names no request id, function or time (a pipe's or a hand-given range): "
            "nothing to look up"
        )
        return why
    region, account, name = function.groups()
    why.log_group = f"/aws/lambda/{name}"
    why.window = (why.failed_at - BEFORE, why.failed_at + AFTER)
    client = await clients.get("logs", region, account)
    found, truncated = await _filter(
        client, why.log_group, why.window, lines, pattern=f'"{why.request_id}"', streams=None
    )
    start = next((line for line in found if _VERSION.match(line.message)), None)
    if start is not None:
        why.version = _VERSION.match(start.message)[1]  # type: ignore[index]
        end = next(
            (line for line in found if line.message.startswith(("END RequestId", "REPORT RequestId"))), None
        )
        until = end.timestamp if end is not None else why.window[1]
        whole, truncated = await _filter(
            client, why.log_group, (start.timestamp, until), lines, pattern=None, streams=[start.stream]
        )
        found = sorted({(line.timestamp, line.message): line for line in [*found, *whole]}.values(),
                       key=lambda line: line.timestamp)[:lines]  # fmt: skip
    if (
        not found
    ):  # lines that do not carry the request id (a logger of its own): the group's, around the failure
        found, truncated = await _filter(client, why.log_group, why.window, lines, pattern=None, streams=None)
        why.note = (
            f"no line of {why.log_group} names request {why.request_id}: shown are its lines around the "
            "failure, other invocations' among them"
            if found
            else f"no log line in {why.log_group} within the window"
        )
    why.lines, why.truncated = found, truncated
    return why


async def _filter(
    client: Any,
    group: str,
    window: tuple[datetime, datetime],
    lines: int,
    *,
    pattern: str | None,
    streams: list[str] | None,
) -> tuple[list[LogLine], bool]:
    found: list[LogLine] = []
    token: str | None = None
    kwargs: dict[str, Any] = {
        "logGroupName": group,
        "startTime": _ms(window[0]),
        "endTime": _ms(window[1]) + 1,
    }
    if pattern:
        kwargs["filterPattern"] = pattern
    if streams:
        kwargs["logStreamNames"] = streams
    try:
        for _ in range(_PAGES):
            answer = await client.filter_log_events(
                **kwargs, limit=max(1, lines - len(found)), **({"nextToken": token} if token else {})
            )
            for event in answer.get("events", []):
                found.append(
                    LogLine(
                        datetime.fromtimestamp(event.get("timestamp", 0) / 1000, UTC),
                        str(event.get("logStreamName", "")),
                        str(event.get("message", "")).rstrip("\n"),
                    )
                )
            token = answer.get("nextToken")
            if not token or len(found) >= lines:
                break
    except ClientError as exc:
        code = error_code(exc)
        if code in _DENIED:
            raise WhyError(
                f"not permitted to read {group}: logs:FilterLogEvents is needed ({code})"
            ) from None
        if code == "ResourceNotFoundException":
            raise WhyError(f"log group {group} not found (another account or region, or deleted?)") from None
        raise WhyError(f"reading {group} failed: {code}: {exc}") from None
    except BotoCoreError as exc:
        raise WhyError(f"reading {group} failed: {exc}") from None
    return found[:lines], bool(token) or len(found) > lines
