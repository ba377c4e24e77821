"""`replayer replay`, `replayer fetch` and `replayer demo`: manual replays."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from replayer import logs, mappings
from replayer.allow import AllowList
from replayer.aws import Clients
from replayer.cli._app import (
    AllowOption,
    ConcurrencyOption,
    DryRunOption,
    ExpiryWarningOption,
    InvokeRetriesOption,
    JsonOption,
    LogLevelOption,
    MaxRecordsPerInvokeOption,
    NoFilterOption,
    ToOption,
    app,
    print_error,
)
from replayer.config import parse_duration
from replayer.core import Replayer, by_deadline, rejected
from replayer.errors import ConfigError, ParseError
from replayer.model import Failure, Origin, Outcome, OutcomeKind
from replayer.parse import parse_document, parse_record
from replayer.report import exit_code, progress, render_table, write_json
from replayer.sinks import SinkOptions, sink_from_uri

__all__ = ["demo", "fetch", "replay"]


def _console(to: Sequence[str]) -> Console:
    return Console(stderr=True)


def _read_inputs(paths: Sequence[str]) -> tuple[list[Failure], list[Outcome]]:
    """Every failure named by the inputs, and a rejection per input that does not parse."""
    failures: list[Failure] = []
    bad: list[Outcome] = []
    for name in paths or ["-"]:
        label = "<stdin>" if name == "-" else name
        try:
            text = sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()
        except OSError as exc:
            bad.append(rejected(None, f"{label}: cannot read: {exc.strerror or exc}"))
            continue
        try:
            failures.extend(parse_document(text, path=label))
        except ParseError as exc:
            bad.append(rejected(None, str(exc)))
    return failures, bad


def _finish(outcomes: list[Outcome], *, as_json: bool, to: Sequence[str], console: Console) -> None:
    if as_json:
        write_json(outcomes, sys.stderr if "-" in to else sys.stdout)
    else:
        render_table(outcomes, console)
    raise typer.Exit(exit_code(outcomes))


def _plan(failures: list[Failure], allow: AllowList) -> list[Outcome]:
    """What a dry run reports: each range as it would be tried, with its event source mapping."""
    planned = []
    allowed = [f for f in failures if allow.allows(f.stream_arn)]
    found = {f.range_id: f for f in asyncio.run(_mappings(allowed))} if allowed else {}
    for f in by_deadline(failures):
        if not allow.allows(f.stream_arn):
            planned.append(rejected(f, f"stream {f.stream_arn} is not in --allow-stream"))
        else:
            f = found.get(f.range_id, f)
            reason = f"dry run: would be replayed; {mappings.summary(f.mapping)}"
            planned.append(Outcome(OutcomeKind.REPLAYED, f, reason=reason))
    return planned


async def _mappings(failures: list[Failure]) -> list[Failure]:
    async with Clients() as clients:
        return await mappings.with_mappings(mappings.MappingFinder(clients), failures)


async def _replay(failures: list[Failure], to: Sequence[str], allow: AllowList, concurrency: int,
                  console: Console, show_progress: bool, options: SinkOptions,
                  expiry_warning: timedelta) -> list[Outcome]:  # fmt: skip
    async with Clients(max_pool_connections=max(10, concurrency * 2)) as clients:
        sinks = [sink_from_uri(uri, clients, options) for uri in to]
        replayer = Replayer(clients, sinks, allow=allow, expiry_warning=expiry_warning)
        with progress(console, len(failures), show_progress) as advance:
            return await replayer.replay_many(failures, concurrency=concurrency, on_done=advance)


def _run(failures: list[Failure], bad: list[Outcome], *, to: list[str], allow_stream: list[str] | None,
         dry_run: bool, as_json: bool, concurrency: int, log_level: str,
         options: SinkOptions | None = None, expiry_warning: str = "2h") -> None:  # fmt: skip
    console = _console(to)
    options = options or SinkOptions()
    try:
        logs.configure(log_level)
        try:
            warning = timedelta(seconds=parse_duration(expiry_warning))
        except ValueError as exc:
            raise ConfigError(f"--expiry-warning: {exc}") from None
        if not to and not dry_run:
            raise ConfigError("--to is required: s3://BUCKET[/PREFIX], file:DIR, lambda:FUNCTION or -")
        for uri in to:
            sink_from_uri(uri, Clients(), options)  # validate every URI before reading anything
    except (ConfigError, ValueError) as exc:
        print_error(console, exc)
        raise typer.Exit(2) from None
    allow = AllowList.from_env(allow_stream or ())
    if dry_run:
        outcomes = _plan(failures, allow)
    else:
        show = console.is_terminal and not as_json
        outcomes = []
        if failures:
            outcomes = asyncio.run(_replay(failures, to, allow, concurrency, console, show, options, warning))
    _finish(bad + outcomes, as_json=as_json, to=to, console=console)


@app.command()
def replay(
    paths: Annotated[
        list[str] | None,
        typer.Argument(
            help="Files holding one invocation record, a JSON array of them, or JSON Lines; - or none: stdin."
        ),
    ] = None,
    to: ToOption = [],  # noqa: B006 - typer reads the default, never mutates it
    allow_stream: AllowOption = None,
    dry_run: DryRunOption = False,
    as_json: JsonOption = False,
    concurrency: ConcurrencyOption = 8,
    log_level: LogLevelOption = "warning",
    max_records_per_invoke: MaxRecordsPerInvokeOption = None,
    invoke_retries: InvokeRetriesOption = 3,
    no_filter: NoFilterOption = False,
    expiry_warning: ExpiryWarningOption = "2h",
) -> None:
    """Replay the ranges named by invocation records (SQS, SNS, Pipes or S3-destination forms)."""
    failures, bad = _read_inputs(paths or [])
    options = SinkOptions(
        max_records_per_invoke=max_records_per_invoke, invoke_retries=invoke_retries, no_filter=no_filter
    )
    _run(failures, bad, to=to, allow_stream=allow_stream, dry_run=dry_run, as_json=as_json,
         concurrency=concurrency, log_level=log_level, options=options,
         expiry_warning=expiry_warning)  # fmt: skip


@app.command()
def fetch(
    stream_arn: Annotated[str, typer.Option("--stream-arn", help="DynamoDB or Kinesis stream ARN.")],
    shard_id: Annotated[str, typer.Option("--shard-id", help="Shard to read.")],
    start: Annotated[str, typer.Option("--start", help="First sequence number (inclusive).")],
    end: Annotated[str, typer.Option("--end", help="Last sequence number (inclusive).")],
    to: ToOption = [],  # noqa: B006
    allow_stream: AllowOption = None,
    dry_run: DryRunOption = False,
    as_json: JsonOption = False,
    log_level: LogLevelOption = "warning",
    max_records_per_invoke: MaxRecordsPerInvokeOption = None,
    invoke_retries: InvokeRetriesOption = 3,
    no_filter: NoFilterOption = False,
    expiry_warning: ExpiryWarningOption = "2h",
) -> None:
    """Replay a range given by hand: no invocation record needed."""
    info_key = "KinesisBatchInfo" if ":kinesis:" in stream_arn else "DDBStreamBatchInfo"
    record = {
        "requestContext": {"condition": "ManualReplay"},
        info_key: {
            "shardId": shard_id,
            "startSequenceNumber": start,
            "endSequenceNumber": end,
            "streamArn": stream_arn,
        },
    }
    try:
        failure = dataclasses.replace(parse_record(record, path="options"), origin=Origin.MANUAL)
    except ParseError as exc:
        print_error(Console(stderr=True), exc)
        raise typer.Exit(2) from None
    options = SinkOptions(
        max_records_per_invoke=max_records_per_invoke, invoke_retries=invoke_retries, no_filter=no_filter
    )
    _run([failure], [], to=to, allow_stream=allow_stream, dry_run=dry_run, as_json=as_json,
         concurrency=1, log_level=log_level, options=options, expiry_warning=expiry_warning)  # fmt: skip


@app.command()
def demo(
    keep: Annotated[bool, typer.Option("--keep", help="Leave the emulator running until Ctrl-C.")] = False,
) -> None:
    """Replay a failed batch end to end against an embedded local AWS emulator (no account needed)."""
    from replayer.demo import run_demo

    raise typer.Exit(run_demo(keep=keep))
