"""A Lambda invocation's tally as one CloudWatch embedded-metric-format line on stdout."""

from __future__ import annotations

import os

from replayer import logs
from replayer.observe import Tally

__all__ = ["flush", "flush_margins", "metric_name"]

log = logs.get_logger("replayer.observe")


def metric_name(tally_name: str) -> str:
    """`messages_received` -> `MessagesReceived` (the names the template's alarms use)."""
    return "".join(part.capitalize() for part in tally_name.split("_"))


async def flush(tally: Tally, source: str) -> None:
    """Write `tally` as EMF under the `replayer` namespace (env AWS_EMF_NAMESPACE), dimension EventSource."""
    from aws_embedded_metrics.config import get_config
    from aws_embedded_metrics.logger.metrics_logger_factory import create_metrics_logger

    config = get_config()
    # The Lambda runtime writes EMF to stdout, whatever the library would guess from the
    # environment (its guess is cached for the process; AWS_EMF_ENVIRONMENT still wins).
    config.environment = config.environment or "lambda"
    metrics = create_metrics_logger()
    metrics.set_namespace(os.environ.get("AWS_EMF_NAMESPACE") or "replayer")
    metrics.set_dimensions({"EventSource": source})
    for name, value in sorted(tally.counts.items()):
        metrics.put_metric(metric_name(name), value, "Count")
    for seconds in tally.read_times:
        metrics.put_metric("ReadSeconds", seconds, "Seconds")
    for seconds in tally.sink_times:
        metrics.put_metric("SinkSeconds", seconds, "Seconds")
    try:
        await metrics.flush()
    except Exception as exc:  # metrics never decide whether a message is settled
        log.warning("metrics_flush_failed", error=str(exc))


async def flush_margins(margins: dict[tuple[str, str], float], *, at_risk: int, rescued: int) -> None:
    """A watch round (`replayer.watch`) as EMF: `MappingExpiryMarginSeconds` per mapping (dimensions
    EventSourceMappingUUID, FunctionName), and `SmallestExpiryMarginSeconds`, `MappingsAtRisk`,
    `AtRiskRecordsArchived` with dimension EventSource=aws.events (what the template's alarm watches)."""
    from aws_embedded_metrics.config import get_config
    from aws_embedded_metrics.logger.metrics_logger_factory import create_metrics_logger

    config = get_config()
    config.environment = config.environment or "lambda"
    namespace = os.environ.get("AWS_EMF_NAMESPACE") or "replayer"
    loggers = []
    for (uuid, function), margin in sorted(margins.items()):
        metrics = create_metrics_logger()
        metrics.set_namespace(namespace)
        metrics.set_dimensions({"EventSourceMappingUUID": uuid, "FunctionName": function})
        metrics.put_metric("MappingExpiryMarginSeconds", margin, "Seconds")
        loggers.append(metrics)
    summary = create_metrics_logger()
    summary.set_namespace(namespace)
    summary.set_dimensions({"EventSource": "aws.events"})
    if margins:
        summary.put_metric("SmallestExpiryMarginSeconds", min(margins.values()), "Seconds")
    summary.put_metric("MappingsAtRisk", at_risk, "Count")
    summary.put_metric("AtRiskRecordsArchived", rescued, "Count")
    loggers.append(summary)
    try:
        for metrics in loggers:
            await metrics.flush()
    except Exception as exc:  # metrics never decide anything
        log.warning("metrics_flush_failed", error=str(exc))
