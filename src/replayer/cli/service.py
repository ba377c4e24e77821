"""`replayer run` (the container's long-running consumer) and `replayer drain` (the same loop, burst mode)."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from rich.console import Console

from replayer.cli._app import JsonOption, app, print_error
from replayer.config import ENV, Settings, load_settings
from replayer.errors import ConfigError

__all__ = ["drain", "run"]


def _env(name: str) -> str:
    return f" Env: {ENV[name]}."


QueueOpt = Annotated[str | None, typer.Option("--queue", help="SQS queue URL to consume." + _env("queue"))]
ToOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--to",
        help="Where recovered records go: s3://BUCKET/PREFIX, file:DIR, or -. Repeatable"
        " (env: comma- or space-separated)." + _env("to"),
    ),
]
AllowOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--allow-stream",
        help="Glob on the stream ARN a message may name; repeatable; unset: every stream."
        + _env("allow_streams"),
    ),
]
QuarantineOpt = Annotated[
    str | None,
    typer.Option(
        "--quarantine",
        help="Where malformed and not-allowed messages go before being deleted: s3://BUCKET/PREFIX or an "
        "SQS queue URL. Unset: they stay on the queue for its redrive policy." + _env("quarantine"),
    ),
]
ConcurrencyOpt = Annotated[
    int | None, typer.Option("--concurrency", help="Ranges at once (8)." + _env("concurrency"))
]
PrefetchOpt = Annotated[
    int | None,
    typer.Option("--prefetch", help="Messages held beyond those in flight (10)." + _env("prefetch")),
]
GraceOpt = Annotated[
    float | None,
    typer.Option(
        "--grace-seconds", help="On SIGTERM, time for in-flight ranges (30)." + _env("grace_seconds")
    ),
]
VisibilityOpt = Annotated[
    int | None,
    typer.Option(
        "--visibility-timeout",
        help="Seconds a held message stays invisible; renewed every third of it (60)."
        + _env("visibility_timeout"),
    ),
]
WaitOpt = Annotated[
    int | None, typer.Option("--wait-seconds", help="Long-poll wait, 0-20 s." + _env("wait_seconds"))
]
RetryBaseOpt = Annotated[
    int | None,
    typer.Option(
        "--retry-base-seconds",
        help="First retry delay, doubling per receive (30)." + _env("retry_base_seconds"),
    ),
]
RetryMaxOpt = Annotated[
    int | None,
    typer.Option("--retry-max-seconds", help="Longest retry delay (900)." + _env("retry_max_seconds")),
]
MaxRecordsOpt = Annotated[
    int | None,
    typer.Option(
        "--max-records-per-invoke",
        help="lambda: sinks: records per invocation (the range's batchSize, else 100)."
        + _env("max_records_per_invoke"),
    ),
]
InvokeRetriesOpt = Annotated[
    int | None,
    typer.Option(
        "--invoke-retries", help="lambda: sinks: retries of a failed invocation (3)." + _env("invoke_retries")
    ),
]
ExpiryWarningOpt = Annotated[
    str | None,
    typer.Option(
        "--expiry-warning",
        help="Warn (log and metric) about ranges this close to their expiry deadline: 7200, 90m, 2h (2h)."
        + _env("expiry_warning"),
    ),
]
LogLevelOpt = Annotated[
    str | None, typer.Option("--log-level", help="debug, info, warning or error." + _env("log_level"))
]


def _settings(flags: dict[str, Any], *, http_port_default: int | None, wait_default: int) -> Settings:
    from replayer.aws import Clients
    from replayer.sinks import sink_from_uri

    clients = Clients()  # sinks are only built here to check them: no client is created

    def sink_check(uri: str) -> str | None:
        try:
            sink_from_uri(uri, clients)
        except ConfigError as exc:
            return str(exc).removeprefix("--to ")
        return None

    def durable(uris: Sequence[str]) -> bool:
        checked = []
        for uri in uris:
            try:
                checked.append(sink_from_uri(uri, clients).durable)
            except ConfigError:
                checked.append(False)
        return any(checked)

    return load_settings(
        flags,
        need_queue=True,
        http_port_default=http_port_default,
        wait_seconds_default=wait_default,
        sink_check=sink_check,
        durable_check=durable,
    )


def _load(flags: dict[str, Any], *, http_port_default: int | None, wait_default: int) -> Settings:
    console = Console(stderr=True)
    try:
        settings = _settings(flags, http_port_default=http_port_default, wait_default=wait_default)
    except ConfigError as exc:
        print_error(console, exc)
        raise typer.Exit(2) from None
    from replayer import logs

    logs.configure(settings.log_level)
    import structlog

    log = structlog.get_logger("replayer.service")
    for warning in settings.warnings:
        log.warning("configuration_warning", warning=warning)
    return settings


async def _check_queue(settings: Settings, clients: Any) -> int | None:
    """Fail fast on a queue that is not there; return its approximate depth."""
    from botocore.exceptions import BotoCoreError, ClientError

    from replayer.config import queue_region

    sqs = await clients.get("sqs", queue_region(settings.queue or ""))
    try:
        answer = await sqs.get_queue_attributes(
            QueueUrl=settings.queue, AttributeNames=["ApproximateNumberOfMessages"]
        )
    except (ClientError, BotoCoreError) as exc:
        raise ConfigError(f"--queue {settings.queue}: {exc}") from exc
    depth = answer.get("Attributes", {}).get("ApproximateNumberOfMessages")
    return int(depth) if depth is not None and str(depth).isdigit() else None


async def _serve(settings: Settings, *, burst: bool, console: Console, show_progress: bool) -> Any:
    import structlog

    from replayer.aws import Clients
    from replayer.observe import Recorder
    from replayer.sources import build_replayer
    from replayer.sources.sqs import Service

    log = structlog.get_logger("replayer.service")
    metrics = Recorder(prometheus=True)
    pool = max(10, settings.concurrency * 2 + 4)
    async with Clients(max_pool_connections=pool) as clients:
        depth = await _check_queue(settings, clients)
        replayer, quarantine = build_replayer(settings, clients, metrics)
        progress_bar: Any = None
        task_id: Any = None
        if show_progress:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            progress_bar = Progress(
                TextColumn("[bold]draining"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                console=console, transient=True,
            )  # fmt: skip
            task_id = progress_bar.add_task("messages", total=depth)

        def settled(job: Any, action: Any) -> None:
            if progress_bar is not None:
                progress_bar.advance(task_id)

        service = Service(
            settings, replayer, recorder=metrics, quarantine=quarantine, burst=burst, on_settled=settled
        )
        http = None
        if settings.http_port is not None:
            from replayer.observe.http import HttpServer

            http = HttpServer(
                metrics.registry,
                alive=lambda: service.alive,
                ready=lambda: service.ready,
                host=settings.http_host,
                port=settings.http_port,
            )
            await http.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, service.stop)
        log.info(
            "service_started",
            queue=settings.queue,
            to=list(settings.to),
            concurrency=settings.concurrency,
            burst=burst,
            quarantine=settings.quarantine,
        )
        try:
            if progress_bar is not None:
                with progress_bar:
                    summary = await service.run()
            else:
                summary = await service.run()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            if http is not None:
                await http.close()
        log.info("service_stopped", **summary.messages)
        return summary


def _flags(**flags: Any) -> dict[str, Any]:
    return flags


@app.command()
def run(
    queue: QueueOpt = None,
    to: ToOpt = None,
    allow_stream: AllowOpt = None,
    quarantine: QuarantineOpt = None,
    concurrency: ConcurrencyOpt = None,
    prefetch: PrefetchOpt = None,
    grace_seconds: GraceOpt = None,
    http_port: Annotated[
        str | None,
        typer.Option(
            "--http-port", help="Port of /healthz, /readyz, /metrics (8080; off: none)." + _env("http_port")
        ),
    ] = None,
    http_host: Annotated[
        str | None, typer.Option("--http-host", help="Address to listen on (0.0.0.0)." + _env("http_host"))
    ] = None,
    visibility_timeout: VisibilityOpt = None,
    wait_seconds: WaitOpt = None,
    retry_base_seconds: RetryBaseOpt = None,
    retry_max_seconds: RetryMaxOpt = None,
    max_records_per_invoke: MaxRecordsOpt = None,
    invoke_retries: InvokeRetriesOpt = None,
    expiry_warning: ExpiryWarningOpt = None,
    log_level: LogLevelOpt = None,
) -> None:
    """Consume the failure queue until SIGTERM/SIGINT: the container's entrypoint."""
    flags = _flags(
        queue=queue, to=to, allow_streams=allow_stream, quarantine=quarantine, concurrency=concurrency,
        prefetch=prefetch, grace_seconds=grace_seconds, http_port=http_port, http_host=http_host,
        visibility_timeout=visibility_timeout, wait_seconds=wait_seconds,
        retry_base_seconds=retry_base_seconds, retry_max_seconds=retry_max_seconds,
        max_records_per_invoke=max_records_per_invoke,
        invoke_retries=invoke_retries, expiry_warning=expiry_warning, log_level=log_level,
    )  # fmt: skip
    settings = _load(flags, http_port_default=8080, wait_default=20)
    console = Console(stderr=True)
    try:
        asyncio.run(_serve(settings, burst=False, console=console, show_progress=False))
    except ConfigError as exc:
        print_error(console, exc)
        raise typer.Exit(2) from None
    raise typer.Exit(0)


@app.command()
def drain(
    queue: QueueOpt = None,
    to: ToOpt = None,
    allow_stream: AllowOpt = None,
    quarantine: QuarantineOpt = None,
    concurrency: ConcurrencyOpt = None,
    grace_seconds: GraceOpt = None,
    http_port: Annotated[
        str | None, typer.Option("--http-port", help="Serve /metrics while draining (default: off).")
    ] = None,
    visibility_timeout: VisibilityOpt = None,
    wait_seconds: Annotated[
        int | None,
        typer.Option(
            "--wait-seconds", help="Wait this long for a message before calling the queue empty (2)."
        ),
    ] = None,
    retry_base_seconds: RetryBaseOpt = None,
    retry_max_seconds: RetryMaxOpt = None,
    max_records_per_invoke: MaxRecordsOpt = None,
    invoke_retries: InvokeRetriesOpt = None,
    expiry_warning: ExpiryWarningOpt = None,
    as_json: JsonOption = False,
    log_level: LogLevelOpt = None,
) -> None:
    """Work the queue until it is empty, then print a summary (for cron jobs and clean-ups).

    Exit 0 when every range was replayed, 1 when anything was lost, rejected or left for
    later, 2 on a configuration problem.
    """
    flags = _flags(
        queue=queue, to=to, allow_streams=allow_stream, quarantine=quarantine, concurrency=concurrency,
        prefetch=None, grace_seconds=grace_seconds, http_port=http_port,
        visibility_timeout=visibility_timeout, wait_seconds=wait_seconds,
        retry_base_seconds=retry_base_seconds, retry_max_seconds=retry_max_seconds,
        max_records_per_invoke=max_records_per_invoke,
        invoke_retries=invoke_retries, expiry_warning=expiry_warning, log_level=log_level,
    )  # fmt: skip
    settings = _load(flags, http_port_default=None, wait_default=2)
    console = Console(stderr=True)
    show = console.is_terminal and not as_json
    try:
        summary = asyncio.run(_serve(settings, burst=True, console=console, show_progress=show))
    except ConfigError as exc:
        print_error(console, exc)
        raise typer.Exit(2) from None
    from replayer.report import exit_code, render_table
    from replayer.report import summary as outcome_summary

    code = exit_code(summary.outcomes)
    left = sum(summary.messages.get(k, 0) for k in ("retried", "left", "released"))
    if left:
        code = max(code, 1)
    if as_json:
        import json

        document = outcome_summary(summary.outcomes)
        document["messages"] = {
            k: summary.messages.get(k, 0)
            for k in ("received", "deleted", "retried", "quarantined", "left", "released")
        }
        document["exit_code"] = code
        out = sys.stderr if "-" in settings.to else sys.stdout
        json.dump(document, out, indent=2)
        out.write("\n")
    else:
        if summary.outcomes:
            render_table(summary.outcomes, console)
        counts = ", ".join(
            f"{summary.messages.get(k, 0)} {k}"
            for k in ("received", "deleted", "retried", "quarantined", "left")
        )
        console.print(f"messages: {counts}", highlight=False, markup=False)
    raise typer.Exit(code)
