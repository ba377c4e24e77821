"""`replayer run` (the container's long-running consumer) and `replayer drain` (the same loop, burst mode)."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
from typing import Any

import typer
from rich.console import Console

from replayer import logs
from replayer.cli._app import command, print_error
from replayer.cli._work import finish, preflight_or_exit, setup, show_progress
from replayer.config import Settings, queue_region
from replayer.errors import ConfigError
from replayer.report import STOPPED_BY_BREAKER, Report

__all__ = ["drain", "run"]


def _literal_streams(settings: Settings) -> list[str]:
    """The --allow-stream entries that name one stream (no glob): each is checked before work."""
    return [arn for arn in settings.allow_streams if not any(c in arn for c in "*?[")]


async def _depth(settings: Settings, clients: Any) -> int | None:
    """The queue's approximate depth (for the progress bar); ConfigError when it is not there."""
    from botocore.exceptions import BotoCoreError, ClientError

    sqs = await clients.get("sqs", queue_region(settings.queue or ""))
    try:
        answer = await sqs.get_queue_attributes(
            QueueUrl=settings.queue, AttributeNames=["ApproximateNumberOfMessages"]
        )
    except (ClientError, BotoCoreError) as exc:
        raise ConfigError(f"--queue {settings.queue}: {exc}") from exc
    depth = answer.get("Attributes", {}).get("ApproximateNumberOfMessages")
    return int(depth) if depth is not None and str(depth).isdigit() else None


async def _serve(settings: Settings, *, burst: bool, console: Console, show: bool) -> Report:
    from replayer.observe import Recorder
    from replayer.report import progress
    from replayer.sinks.guard import Guard
    from replayer.sources import build_replayer, clients_for
    from replayer.sources.sqs import Service
    from replayer.watch import watching

    log = logs.get_logger("replayer.service")
    logs.load_now()  # a line logged once descriptors run out must need no import
    logs.contain_loop_errors(asyncio.get_running_loop())
    metrics = Recorder(prometheus=True)
    async with clients_for(settings) as clients:
        depth = await _depth(settings, clients) if settings.queue else None
        guard = Guard.of(settings)  # run: a tripped breaker pauses; drain: it stops taking messages
        replayer, quarantine = build_replayer(settings, clients, metrics, guard=guard)
        with progress(console, depth, show and burst, what="messages") as advance:
            service: Any
            if settings.kafka_topic is not None:  # a Kafka dead-letter topic instead of the queue
                from replayer.sources.kafka_topic import DeadLetterTopic

                service = DeadLetterTopic(
                    settings, replayer, replayer.readers.kafka, recorder=metrics, quarantine=quarantine,
                    burst=burst,
                )  # fmt: skip
            else:
                service = Service(
                    settings, replayer, recorder=metrics, quarantine=quarantine, burst=burst,
                    on_settled=lambda _job, _action: advance(None),
                )  # fmt: skip
            guard.on_stop.append(lambda _reason: service.stop())
            http = None
            if settings.http_port is not None:
                from replayer.observe.http import HttpServer

                async def status() -> dict[str, Any]:
                    from replayer.status import gather_status

                    held = service.seconds_to_nearest_expiry
                    document = await gather_status(
                        clients, queue=settings.queue, quarantine=settings.quarantine, held_expiry=held
                    )
                    return {**document, "service": service.status()}

                http = HttpServer(
                    metrics.registry, alive=lambda: service.alive, ready=lambda: service.ready,
                    host=settings.http_host, port=settings.http_port,
                    status=status if settings.status_endpoint else None,
                )  # fmt: skip
                port = await http.start()
                settings = dataclasses.replace(settings, http_port=port)  # the port chosen for 0
            loop = asyncio.get_running_loop()
            caught: list[str] = []

            def stop(sig: signal.Signals) -> None:
                caught.append(sig.name)
                service.stop()

            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop, sig)
            _started(settings, burst, console, log)
            try:
                async with watching(settings, clients, metrics):  # run: the at-risk watch (replayer.watch)
                    summary = await service.run()
            finally:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
                if http is not None:
                    await http.close()
        log.info("service_stopped", **summary.messages)
        interrupted = caught[0] if caught and burst else None  # `run` stops on a signal by design: exit 0
        notes = [
            f"interrupted ({interrupted}): no new message was taken; {summary.messages.get('released', 0)} "
            "unfinished messages were released to the queue for the next run"
        ] if interrupted else []  # fmt: skip
        report = Report(summary.outcomes, messages=summary.messages, interrupted=interrupted, notes=notes)
        if guard.stopped is not None and interrupted is None:
            note = f"stopped taking messages: {guard.stopped}; what was not done stays on the queue"
            report = dataclasses.replace(
                report, stopped=STOPPED_BY_BREAKER, stop_reason=guard.stopped, notes=[*notes, note]
            )
        return report


def _started(settings: Settings, burst: bool, console: Console, log: Any) -> None:
    """A log event saying where it listens and what it consumes; on a terminal, the same for people
    (stderr that is not a terminal carries JSON log lines only)."""
    listens = (
        f"http://{settings.http_host}:{settings.http_port}" if settings.http_port is not None else "no HTTP"
    )
    if not burst and console.is_terminal:
        console.print(
            f"replayer run: consuming {settings.queue or settings.kafka_topic} into {', '.join(settings.to)}; "
            f"{settings.concurrency} ranges at once; {listens} (/healthz /readyz /metrics"
            f"{' /status' if settings.status_endpoint else ''}); "
            "SIGTERM or Ctrl-C stops",
            soft_wrap=True, markup=False, highlight=False,
        )  # fmt: skip
    log.info(
        "service_started", queue=settings.queue, to=list(settings.to), concurrency=settings.concurrency,
        burst=burst, quarantine=settings.quarantine, http=listens,
    )  # fmt: skip


def _consume(settings: Settings, *, burst: bool) -> Report:
    from replayer.cli.preflight import Checks

    console = setup(settings)
    for warning in settings.warnings:
        logs.get_logger("replayer.service").warning("configuration_warning", warning=warning)
    streams = _literal_streams(settings)
    checks = Checks(
        sinks=settings.to, queue=settings.queue, streams=streams,
        read_tables=streams if settings.skip_stale else (),
    )  # fmt: skip
    preflight_or_exit(settings, checks)
    try:
        return asyncio.run(
            _serve(settings, burst=burst, console=console, show=show_progress(settings, console))
        )
    except ConfigError as exc:
        print_error(console, exc)
        raise typer.Exit(2) from None


@command("drain")
def drain(settings: Settings) -> None:
    """Work the queue until it is empty, then print a summary (for cron jobs and clean-ups).

    Exit 0 when every range was replayed, 1 when anything was lost, rejected or left for
    later, 2 on a configuration problem, 130/143 when interrupted.
    """
    finish(settings, _consume(settings, burst=True))


@command("run")
def run(settings: Settings) -> None:
    """Consume the failure queue until SIGTERM/SIGINT: the container's entrypoint."""
    _consume(settings, burst=False)
    raise typer.Exit(0)
