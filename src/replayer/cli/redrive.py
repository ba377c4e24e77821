"""`replayer redrive`: re-drive archived ranges to a repair function, resuming where a run stopped."""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated

import typer
from rich.console import Console

from replayer import logs
from replayer.archive.store import StoreError
from replayer.aws import Clients
from replayer.cli._app import (
    ConcurrencyOption,
    DryRunOption,
    InvokeRetriesOption,
    JsonOption,
    LogLevelOption,
    MaxRecordsPerInvokeOption,
    app,
    print_error,
)
from replayer.errors import ConfigError
from replayer.model import Outcome
from replayer.redrive import Redriver, Selection, archive_from_uri, parse_time
from replayer.report import exit_code, progress, render_table, write_json
from replayer.sinks import LambdaSink, SinkOptions, sink_from_uri

__all__ = ["redrive"]


def _targets(to: list[str], clients: Clients, options: SinkOptions) -> list[LambdaSink]:
    if not to:
        raise ConfigError("--to is required: lambda:FUNCTION[:QUALIFIER] (repeatable)")
    targets = []
    for uri in to:
        sink = sink_from_uri(uri, clients, options) if uri.startswith("lambda:") else None
        if not isinstance(sink, LambdaSink):
            raise ConfigError(f"--to {uri!r}: redrive re-drives to functions only; expected lambda:FUNCTION")
        targets.append(sink)
    return targets


async def _redrive(source: str, to: list[str], selection: Selection, *, force: bool, dry_run: bool,
                   concurrency: int, options: SinkOptions, console: Console,
                   show_progress: bool) -> list[Outcome]:  # fmt: skip
    async with Clients(max_pool_connections=max(10, concurrency * 2)) as clients:
        redriver = Redriver(archive_from_uri(source, clients), _targets(to, clients, options), force=force)
        ranges, bad = await redriver.find(selection, concurrency=max(8, concurrency))
        if dry_run:
            return bad + redriver.plan(ranges)
        with progress(console, len(ranges), show_progress) as advance:
            return bad + await redriver.redrive_many(ranges, concurrency=concurrency, on_done=advance)


@app.command()
def redrive(
    source: Annotated[
        str,
        typer.Option(
            "--from",
            help="The archive written by --to: s3://BUCKET[/PREFIX] or file:DIR.",
            envvar="REPLAYER_REDRIVE_FROM",
        ),
    ],
    to: Annotated[
        list[str],
        typer.Option(
            "--to", help="The repair function: lambda:FUNCTION[:QUALIFIER] or a function ARN. Repeatable."
        ),
    ] = [],  # noqa: B006 - typer reads the default, never mutates it
    range_id: Annotated[
        list[str] | None, typer.Option("--range-id", help="Only this range (its range_id). Repeatable.")
    ] = None,
    stream_arn: Annotated[
        list[str] | None,
        typer.Option("--stream-arn", help="Only ranges of this stream (ARN or glob). Repeatable."),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="Only ranges whose first record arrived at or after this ISO time."),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option("--until", help="Only ranges whose first record arrived before this ISO time."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Re-drive ranges even if already re-driven to that function.")
    ] = False,
    dry_run: DryRunOption = False,
    as_json: JsonOption = False,
    concurrency: ConcurrencyOption = 4,
    log_level: LogLevelOption = "warning",
    max_records_per_invoke: MaxRecordsPerInvokeOption = None,
    invoke_retries: InvokeRetriesOption = 3,
) -> None:
    """Re-drive archived ranges to a repair function; a rerun skips what already succeeded."""
    console = Console(stderr=True)
    options = SinkOptions(max_records_per_invoke=max_records_per_invoke, invoke_retries=invoke_retries)
    try:
        logs.configure(log_level)
        selection = Selection(
            range_ids=frozenset(range_id or ()),
            stream_arns=tuple(stream_arn or ()),
            since=parse_time(since, "--since") if since else None,
            until=parse_time(until, "--until") if until else None,
        )
        selection.folders()  # validates --stream-arn
        archive_from_uri(source, Clients())
        _targets(to, Clients(), options)
    except (ConfigError, ValueError) as exc:
        print_error(console, exc)
        raise typer.Exit(2) from None
    show = console.is_terminal and not as_json
    try:
        outcomes = asyncio.run(
            _redrive(source, to, selection, force=force, dry_run=dry_run, concurrency=concurrency,
                     options=options, console=console, show_progress=show)
        )  # fmt: skip
    except ConfigError as exc:
        print_error(console, exc)
        raise typer.Exit(2) from None
    except StoreError as exc:
        # an archive that is not there is a usage error; one that failed to answer is not
        missing = exc.code in ("NoSuchBucket", "NoSuchDirectory")
        print_error(console, f"--from {exc}" if missing else exc)
        raise typer.Exit(2 if missing else 1) from None
    if as_json:
        write_json(outcomes, sys.stdout)
    else:
        render_table(outcomes, console)
    raise typer.Exit(exit_code(outcomes))
