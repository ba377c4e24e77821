"""Checks made before any work: one line per problem, saying what to do; the command then exits 2.

Credentials, the endpoint, every sink, the queue and every named stream (once each) are
asked with one attempt and short timeouts, so a set-up mistake costs seconds, not a retry
per range. Nothing here writes, receives a message or reads a record.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConfigNotFound,
    ConfigParseError,
    CredentialRetrievalError,
    EndpointConnectionError,
    InvalidConfigError,
    InvalidRegionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
    SSOError,
    TokenRetrievalError,
    UnknownCredentialError,
)

from replayer.archive.store import parse_location
from replayer.aws import AssumeRoles, Clients, default_region, error_code
from replayer.config import queue_region
from replayer.model import StreamKind, parse_stream_arn
from replayer.readers import NO_SUCH_STREAM
from replayer.sinks.lambda_ import parse_target

__all__ = ["Checks", "NO_SUCH_STREAM", "preflight", "setup_problem"]

_CONNECT_SECONDS = 3.0
_MISSING = ("ResourceNotFoundException", "NoSuchBucket", "404", "NotFound", "AWS.SimpleQueueService.NonExistentQueue",
            "QueueDoesNotExist")  # fmt: skip
_DENIED = ("AccessDenied", "AccessDeniedException", "403", "UnauthorizedOperation", "Forbidden")


@dataclass(frozen=True, slots=True)
class Checks:
    """What a command is about to use."""

    sinks: Sequence[str] = ()  # --to URIs
    queue: str | None = None
    streams: Sequence[str] = ()  # stream ARNs named by the input (each checked once)
    archive: str | None = None  # redrive --from
    assume_roles: Sequence[str] = ()  # --assume-role: streams of other accounts are checked with their role
    read_tables: Sequence[str] = ()  # --skip-stale: DynamoDB stream ARNs whose tables are read back


# botocore's errors that say the AWS set-up (profile, config file, credentials, region) is wrong:
# no call can succeed, so each is one line and exit 2, never a traceback or a retry per range.
_SETUP_ERRORS: tuple[type[Exception], ...] = (
    ProfileNotFound, ConfigNotFound, ConfigParseError, CredentialRetrievalError, PartialCredentialsError,
    UnknownCredentialError, NoCredentialsError, InvalidConfigError, NoRegionError, InvalidRegionError,
    SSOError, TokenRetrievalError,
)  # fmt: skip
_MAX_PROBLEM_CHARS = 400


def setup_problem(exc: BaseException) -> str | None:
    """The one line saying what is wrong with the AWS set-up, when `exc` is such a mistake; else None."""
    if not isinstance(exc, _SETUP_ERRORS):
        return None
    text = " ".join(str(exc).split())  # a credential process's stderr may span lines
    if len(text) > _MAX_PROBLEM_CHARS:
        text = text[: _MAX_PROBLEM_CHARS - 3] + "..."
    if isinstance(exc, ProfileNotFound):
        fix = "check AWS_PROFILE (aws configure list-profiles lists them)"
    elif isinstance(exc, ConfigParseError | ConfigNotFound | InvalidConfigError):
        fix = "fix the file (AWS_CONFIG_FILE, AWS_SHARED_CREDENTIALS_FILE, or ~/.aws/)"
    elif isinstance(exc, NoRegionError | InvalidRegionError):
        fix = "set AWS_REGION"
    else:
        fix = "check the credentials of AWS_PROFILE (aws sts get-caller-identity says what is wrong)"
    return f"AWS configuration: {text}; {fix}"


def _endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL") or None


async def _reachable(url: str) -> str | None:
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), _CONNECT_SECONDS)
    except (OSError, TimeoutError) as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        return (
            f"cannot reach the AWS endpoint {url} (AWS_ENDPOINT_URL): {reason}; "
            "start the emulator, fix AWS_ENDPOINT_URL, or unset it to use AWS"
        )
    writer.close()
    return None


def _failed(what: str, exc: Exception, missing: str, fix: str) -> str:
    if isinstance(exc, EndpointConnectionError):
        hint = "set AWS_ENDPOINT_URL for an emulator" if _endpoint() is None else "check AWS_ENDPOINT_URL"
        return f"{what}: cannot reach AWS ({exc}); check the network and AWS_REGION, or {hint}"
    code = error_code(exc) if isinstance(exc, ClientError) else ""
    if code in _MISSING:
        return f"{what}: {missing}; {fix}"
    if code in _DENIED:
        return f"{what}: access denied ({code}); grant the permission in the IAM policy (docs/configuration.md, IAM)"
    return f"{what}: {exc}"


async def _call(coro: Any) -> Exception | None:
    try:
        await coro
    except _SETUP_ERRORS:
        raise  # the set-up, not this check: one line for the whole pre-flight
    except (ClientError, BotoCoreError, OSError) as exc:
        return exc
    return None


async def _sink(uri: str, clients: Clients, *, role: str = "--to") -> str | None:
    if uri == "-":
        return None
    if uri.startswith("lambda:"):
        target = parse_target(uri[len("lambda:") :])
        client = await clients.get("lambda", target.region, target.account)
        extra = {"Qualifier": target.qualifier} if target.qualifier else {}
        exc = await _call(client.get_function(FunctionName=target.function, **extra))
        region = target.region or default_region()
        return _failed(
            f"{role} {uri}", exc, f"no such function in {region}", "deploy it or fix the name, qualifier or AWS_REGION"
        ) if exc else None  # fmt: skip
    location = parse_location(uri)
    if location is None:
        return None  # the URI itself was checked with the settings
    kind, where, _ = location
    if kind == "file":
        return _directory(uri, Path(where), role=role, must_exist=role == "--from")
    s3 = await clients.get("s3")
    exc = await _call(s3.head_bucket(Bucket=where))
    return (
        _failed(f"{role} {uri}", exc, "no such bucket", "create it or fix the bucket name") if exc else None
    )


def _directory(uri: str, path: Path, *, role: str, must_exist: bool) -> str | None:
    if path.exists() and not path.is_dir():
        return f"{role} {uri}: {path} is a regular file; file: needs a directory"
    if must_exist and not path.exists():
        return f"{role} {uri}: no such directory; give the folder the archive was written to"
    probe = path
    while not probe.exists():  # created on first write: its nearest existing parent must be writable
        probe = probe.parent
    if not os.access(probe, os.W_OK | os.X_OK) and role == "--to":
        return f"{role} {uri}: {probe} is not writable; choose another directory or fix its permissions"
    return None


async def _queue(url: str, clients: Clients) -> str | None:
    sqs = await clients.get("sqs", queue_region(url))
    exc = await _call(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"]))
    return _failed(f"--queue {url}", exc, "no such queue", "create it or fix the URL") if exc else None


async def _stream(arn: str, clients: Clients) -> str | None:
    parsed = parse_stream_arn(arn)
    if parsed is None or parsed.kind is StreamKind.KAFKA:
        # Refused by parsing (the range is rejected, not read), or a Kafka cluster: its brokers are
        # found per range (configuration or its mapping), none to check before the work.
        return None
    if parsed.kind is StreamKind.DYNAMODB:
        client = await clients.get("dynamodbstreams", parsed.region, parsed.account)
        call = client.describe_stream(StreamArn=arn, Limit=1)
    else:
        client = await clients.get("kinesis", parsed.region, parsed.account)
        call = client.describe_stream_summary(StreamARN=arn)
    exc = await _call(call)
    if exc is None or (isinstance(exc, ClientError) and error_code(exc) in _MISSING):
        return None  # a stream that is gone rejects its own ranges (NO_SUCH_STREAM), not the whole run
    return _failed(arn, exc, NO_SUCH_STREAM, "check the stream ARN (and AWS_REGION or the account)")


async def _table_reads(arn: str, clients: Clients) -> str | None:
    """--skip-stale reads items back: a BatchGetItem of a key no table has is refused by IAM first
    (AccessDeniedException) and by the table's key schema only when allowed (ValidationException)."""
    parsed = parse_stream_arn(arn)
    if parsed is None or parsed.kind is not StreamKind.DYNAMODB:
        return None
    client = await clients.get("dynamodb", parsed.region, parsed.account)
    probe = {parsed.name: {"Keys": [{"replayer-preflight": {"S": "-"}}], "ConsistentRead": True}}
    exc = await _call(client.batch_get_item(RequestItems=probe))
    code = error_code(exc) if isinstance(exc, ClientError) else ""
    if exc is None or code == "ValidationException":
        return None
    if code in _DENIED:
        return (
            f"--skip-stale: table {parsed.name}: access denied ({code}); --skip-stale needs "
            "dynamodb:BatchGetItem on it (the templates' SkipStale parameter grants it)"
        )
    return _failed(f"--skip-stale: table {parsed.name}", exc, "no such table", "check the stream's table")


async def preflight(checks: Checks) -> list[str]:
    """Every problem found, one line each; an empty list when the command may start."""
    try:
        return await _preflight(checks)
    except _SETUP_ERRORS as exc:
        return [setup_problem(exc) or str(exc)]


async def _preflight(checks: Checks) -> list[str]:
    endpoint = _endpoint()
    if endpoint is not None and (problem := await _reachable(endpoint)):
        return [problem]
    roles = AssumeRoles.of(checks.assume_roles)
    async with Clients(
        max_attempts=1, connect_timeout=_CONNECT_SECONDS, read_timeout=10.0, assume_roles=roles
    ) as clients:
        if not await clients.has_credentials():
            return [
                "no AWS credentials found: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                "or run with a role"
            ]
        calls = [_sink(uri, clients) for uri in dict.fromkeys(checks.sinks)]
        if checks.archive:
            calls.append(_sink(checks.archive, clients, role="--from"))
        if checks.queue:
            calls.append(_queue(checks.queue, clients))
        calls += [_stream(arn, clients) for arn in dict.fromkeys(checks.streams)]
        calls += [_table_reads(arn, clients) for arn in dict.fromkeys(checks.read_tables)]
        answers = await asyncio.gather(*calls)
    problems = [a for a in answers if a]
    unreachable = [p for p in problems if "cannot reach AWS" in p]
    return unreachable[:1] or problems  # one line for the network, not one per check
