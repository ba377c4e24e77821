"""The Typer app and the options every command shares."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from replayer import __version__

__all__ = [
    "AllowOption",
    "ConcurrencyOption",
    "DryRunOption",
    "ExpiryWarningOption",
    "InvokeRetriesOption",
    "JsonOption",
    "LogLevelOption",
    "MaxRecordsPerInvokeOption",
    "NoFilterOption",
    "ToOption",
    "app",
    "print_error",
]

app = typer.Typer(
    name="replayer",
    help="Rescue the DynamoDB Streams and Kinesis records that AWS Lambda discarded, before they expire.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts hold brackets (s3://BUCKET[/PREFIX]), not rich markup
)

ToOption = Annotated[
    list[str],
    typer.Option(
        "--to",
        help="Where recovered records go: s3://BUCKET[/PREFIX], file:DIR, lambda:FUNCTION[:QUALIFIER] "
        "(a repair function, invoked with the event Lambda would have sent), or - (stdout). "
        "Repeatable: delivered in the order given.",
        envvar="REPLAYER_TO",
    ),
]
AllowOption = Annotated[
    list[str] | None,
    typer.Option(
        "--allow-stream",
        help="Glob on the stream ARN a record may name (repeatable; env REPLAYER_ALLOW_STREAMS, "
        "comma-separated). Unset: every stream.",
    ),
]
DryRunOption = Annotated[bool, typer.Option("--dry-run", help="Parse and plan; read and write nothing.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print a machine-readable summary.")]
ConcurrencyOption = Annotated[
    int, typer.Option("--concurrency", min=1, max=256, envvar="REPLAYER_CONCURRENCY", help="Ranges at once.")
]
MaxRecordsPerInvokeOption = Annotated[
    int | None,
    typer.Option(
        "--max-records-per-invoke",
        min=1,
        envvar="REPLAYER_MAX_RECORDS_PER_INVOKE",
        help="lambda: sinks: records per invocation (default: the range's batchSize, else 100). "
        "Invocations also stay under the 6 MB payload limit.",
    ),
]
InvokeRetriesOption = Annotated[
    int,
    typer.Option(
        "--invoke-retries",
        min=0,
        max=100,
        envvar="REPLAYER_INVOKE_RETRIES",
        help="lambda: sinks: retries of an invocation that failed or left records unconfirmed "
        "(batchItemFailures), with backoff and jitter; then the range is left for a later retry.",
    ),
]
NoFilterOption = Annotated[
    bool,
    typer.Option(
        "--no-filter",
        envvar="REPLAYER_NO_FILTER",
        help="lambda: sinks: send every record of the range, not only those the event source mapping's "
        "FilterCriteria admits (the function never saw the others). Archives always keep every record.",
    ),
]
ExpiryWarningOption = Annotated[
    str,
    typer.Option(
        "--expiry-warning",
        envvar="REPLAYER_EXPIRY_WARNING",
        help="Warn about ranges this close to their expiry deadline (first arrival + the stream's "
        "retention): 7200, 90m, 2h.",
    ),
]
LogLevelOption = Annotated[
    str, typer.Option("--log-level", envvar="REPLAYER_LOG_LEVEL", help="debug, info, warning or error.")
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"replayer {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Rescue the DynamoDB Streams and Kinesis records that AWS Lambda discarded."""


def print_error(console: Console, error: object) -> None:
    """One clear line on stderr; the message is text, never rich markup."""
    console.print(f"[red]error:[/] {escape(str(error))}")
