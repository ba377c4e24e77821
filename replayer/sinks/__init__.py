"""Sinks receive recovered ranges; `SINK_KINDS` is the one table of the kinds there are.

Every sink follows `Sink` (``deliver(failure, result) -> Delivery``). Adding one is its
module plus one `SinkKind` row below: `sink_from_uri`, the `--to` help text
(`describe_uri_forms`), configuration errors and the docs' sink table
(`sink_table_markdown`) all come from that table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from replayer.archive.store import parse_location
from replayer.archive.write import ArchiveConflict
from replayer.aws import Clients
from replayer.config import Settings
from replayer.errors import ConfigError
from replayer.selection import Selection
from replayer.sinks._base import Delivery, Sink, SinkError
from replayer.sinks.archive import ArchiveSink, FileSink, S3Sink
from replayer.sinks.guard import Guard
from replayer.sinks.lambda_ import (
    DEFAULT_INVOKE_TIME_LIMIT,
    DEFAULT_MAX_INVOCATIONS,
    DEFAULT_MAX_PAYLOAD,
    LambdaSink,
    parse_target,
)
from replayer.sinks.stdout import StdoutSink

__all__ = [
    "SINK_KINDS",
    "keeps_reports",
    "sink_problem",
    "ArchiveConflict",
    "ArchiveSink",
    "Delivery",
    "FileSink",
    "LambdaSink",
    "S3Sink",
    "Sink",
    "SinkError",
    "SinkKind",
    "SinkOptions",
    "StdoutSink",
    "describe_uri_forms",
    "durable_kinds",
    "sink_from_uri",
    "sink_kind",
    "sink_table_markdown",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class SinkOptions:
    """Settings for the sinks that take any (today: `lambda:`); the defaults suit most runs."""

    max_records_per_invoke: int | None = None  # None: the range's batchSize, else 100
    invoke_retries: int = 3  # invocations in a row that confirmed nothing, after the first, per batch
    max_invocations: int = DEFAULT_MAX_INVOCATIONS  # per batch, progress or not
    invoke_time_limit: float = DEFAULT_INVOKE_TIME_LIMIT  # seconds per batch, progress or not
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD
    retry_wait: float = 1.0  # first backoff (seconds); doubles, with as much jitter
    retry_wait_max: float = 30.0
    no_filter: bool = False  # send every record, not only those the mapping's FilterCriteria admits
    selection: Selection | None = None  # --where/--since/--until/--limit: narrows what lambda: sinks send
    invoke_identity_arn: str | None = None  # Kinesis invokeIdentityArn override; None: the target's role
    manifest_key: str | None = None  # archives: the KMS HMAC key signing and checking manifests
    guard: Guard | None = None  # pacing, breaker, staleness; one per process, shared by its lambda: sinks

    @classmethod
    def of(
        cls, settings: Settings, *, selection: Selection | None = None, guard: Guard | None = None
    ) -> SinkOptions:
        """The options a command's settings give (every command builds its sinks the same way);
        `guard`: the process's re-drive guard (default: a new one from the settings)."""
        return cls(
            max_records_per_invoke=settings.max_records_per_invoke,
            invoke_retries=settings.invoke_retries,
            no_filter=settings.no_filter,
            max_invocations=settings.max_invocations,
            invoke_time_limit=settings.invoke_time_limit,
            selection=selection,
            invoke_identity_arn=settings.invoke_identity_arn,
            manifest_key=settings.manifest_key,
            guard=guard or Guard.of(settings),
        )


@dataclass(frozen=True, slots=True)
class SinkKind:
    """One kind of sink: how its URI starts, its URI form, what it does, whether it keeps reports."""

    prefix: str  # what a URI of this kind starts with ("-" : exactly "-")
    form: str  # the URI form for people: ``s3://BUCKET[/PREFIX]``
    description: str  # one line
    durable: bool  # keeps loss reports that outlive the stream
    build: Callable[[str, Clients, SinkOptions], Sink]

    def matches(self, uri: str) -> bool:
        return uri == self.prefix if self.prefix == "-" else uri.startswith(self.prefix)


def _archive(uri: str, clients: Clients, options: SinkOptions) -> Sink:
    location = parse_location(uri)
    if location is None:
        raise ConfigError(f"--to {uri!r}: no bucket or directory; expected {describe_uri_forms()}")
    kind, where, prefix = location
    key = options.manifest_key
    if kind == "s3":
        return S3Sink(clients, where, prefix, manifest_key=key)
    return FileSink(where, clients, manifest_key=key)


def _lambda(uri: str, clients: Clients, options: SinkOptions) -> Sink:
    try:
        target = parse_target(uri[len("lambda:") :])
    except ConfigError as exc:
        raise ConfigError(f"--to {uri!r}: {exc}") from None
    return LambdaSink(
        clients,
        target,
        max_records_per_invoke=options.max_records_per_invoke,
        invoke_retries=options.invoke_retries,
        max_payload_bytes=options.max_payload_bytes,
        retry_wait=options.retry_wait,
        retry_wait_max=options.retry_wait_max,
        apply_filter=not options.no_filter,
        max_invocations=options.max_invocations,
        invoke_time_limit=options.invoke_time_limit,
        selection=options.selection,
        invoke_identity_arn=options.invoke_identity_arn,
        guard=options.guard,
    )


def _stdout(uri: str, clients: Clients, options: SinkOptions) -> Sink:
    return StdoutSink(clients=clients)


SINK_KINDS: tuple[SinkKind, ...] = (
    SinkKind(
        "s3://",
        "s3://BUCKET[/PREFIX]",
        "archive in S3: records, manifest and loss report per range, create-only",
        True,
        _archive,
    ),
    SinkKind("file:", "file:DIR", "the same archive layout in a local directory", True, _archive),
    SinkKind(
        "lambda:",
        "lambda:NAME[:QUALIFIER]",
        "re-drive to a repair function (name or ARN) in the event Lambda would have sent",
        False,
        _lambda,
    ),
    SinkKind("-", "-", "JSON Lines on stdout, one record a line", False, _stdout),
)


def sink_kind(uri: str) -> SinkKind | None:
    """The kind of sink a `--to` URI names, or None (no URI is built, nothing is checked)."""
    return next((kind for kind in SINK_KINDS if kind.matches(uri)), None)


def describe_uri_forms(*, durable_only: bool = False) -> str:
    """The accepted `--to` forms for help texts and errors: ``s3://BUCKET[/PREFIX], file:DIR, ... or -``."""
    forms = [kind.form for kind in SINK_KINDS if kind.durable or not durable_only]
    return forms[0] if len(forms) == 1 else ", ".join(forms[:-1]) + " or " + forms[-1]


def durable_kinds() -> str:
    """The durable forms, for "add a sink that keeps loss reports" messages."""
    return describe_uri_forms(durable_only=True)


def sink_table_markdown() -> str:
    """The docs' sink table (a test keeps docs/cli.md equal to it)."""
    rows = ["| `--to` | what it does | keeps loss reports |", "| --- | --- | --- |"]
    rows += [f"| `{k.form}` | {k.description} | {'yes' if k.durable else 'no'} |" for k in SINK_KINDS]
    return "\n".join(rows)


def sink_from_uri(uri: str, clients: Clients, options: SinkOptions | None = None) -> Sink:
    """Build the sink a `--to` URI names, or raise ConfigError saying what is accepted."""
    kind = sink_kind(uri)
    if kind is None:
        raise ConfigError(f"--to {uri!r}: unknown sink; expected {describe_uri_forms()}")
    return kind.build(uri, clients, options or SinkOptions())


def sink_problem(uri: str) -> str | None:
    """What is wrong with a `--to` URI, or None; the sink is built to check it (no AWS client is made)."""
    try:
        sink_from_uri(uri, Clients())
    except ConfigError as exc:
        return str(exc).removeprefix("--to ")
    return None


def keeps_reports(uris: Sequence[str]) -> bool:
    """True when one of the `--to` URIs is a valid sink that keeps loss reports."""
    return any(sink_problem(uri) is None and sink_from_uri(uri, Clients()).durable for uri in uris)
