"""The deployed function draining a backlog through the SQS event source: a model from measured invocations.

    .venv/bin/python -m bench.lambda_model                  # 1,000 messages of 1,000 records, and of 100
    .venv/bin/python -m bench.lambda_model --messages 1000 --records 1000 --repeat 3

What is measured (bench/cold_start.py: the zip as `make package` builds it, in a fresh interpreter
that sees the zip and the standard library only, against the canned endpoint at 20 ms a request):
Lambda's init, the first invocation (cold) and further invocations in the same process (warm),
each an SQS event of the template's BatchSize messages, one failed range of `--records` records
(records with both images) each, REPLAYER_CONCURRENCY as the template sets it.

What is modelled: the SQS event source hands the backlog out in batches of BatchSize to at most
MaximumConcurrency environments at once (deploy/template.yaml's values); with a full backlog each
batch fills at once (MaximumBatchingWindowInSeconds never waits). Each environment runs one cold
invocation (init + first), then warm ones back to back. The function's memory buys a share of a
vCPU (1,769 MB = one vCPU). Billed: every
invocation's duration and the init (billed since 2025), x MemorySize in GB.

An invocation's duration in the model is its measured CPU time divided by that share, plus the
round trips on its critical path at `--delay-ms` each, with no overlap between the two (an upper
bound): ceil(BatchSize / REPLAYER_CONCURRENCY) ranges one after another, each GetShardIterator,
its GetRecords pages and two PutObject (and the cold one looks up the event source mapping once).
The walls measured here are shown, not used: on a shared machine they hold other people's CPU.
"""

from __future__ import annotations

import argparse
import math
import re
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson

from bench import cold_start
from bench import endpoint as canned

ROOT = Path(__file__).resolve().parent.parent
VCPU_MB = 1769  # Lambda: one vCPU at 1,769 MB, CPU share proportional to memory


def template_settings() -> dict[str, int]:
    """BatchSize, MaximumConcurrency's default, MemorySize and REPLAYER_CONCURRENCY from deploy/template.yaml."""
    text = (ROOT / "deploy" / "template.yaml").read_text()

    def find(pattern: str) -> int:
        found = re.search(pattern, text, re.S)
        if found is None:
            raise SystemExit(f"deploy/template.yaml: {pattern!r} not found")
        return int(found.group(1))

    return {
        "batch_size": find(r"FailureRecords:.*?BatchSize: (\d+)"),
        "max_concurrency": find(r"\n  MaximumConcurrency:.*?Default: (\d+)"),
        "memory_mb": find(r"MemorySize: (\d+)"),
        "replayer_concurrency": find(r'REPLAYER_CONCURRENCY: "(\d+)"'),
    }


def measure(
    records: int, warm: int, repeat: int, delay_ms: float, settings: dict[str, int]
) -> dict[str, Any]:
    """Init, cold and warm invocation figures (medians over `repeat` fresh processes)."""
    batch = settings["batch_size"]
    per_process = batch * (1 + warm)
    server = canned.start(delay_ms)
    workdir = Path(tempfile.mkdtemp(prefix="replayer-lambda-model-"))
    runs = []
    try:
        for n in range(repeat):
            bodies = canned_ranges(server.endpoint, f"model-{records}-{n}", per_process, records)
            batches = [bodies[i : i + batch] for i in range(0, per_process, batch)]
            runs.append(
                cold_start.measure(
                    server.proxied,
                    bodies[0],
                    workdir,
                    batches=batches,
                    extra_env={"REPLAYER_CONCURRENCY": str(settings["replayer_concurrency"])},
                )
            )
    finally:
        server.close()
        shutil.rmtree(workdir, ignore_errors=True)
    warm_runs = [w for r in runs for w in r["warm"]]
    return {
        "init_s": statistics.median(r["init_s"] for r in runs),
        "init_cpu_s": statistics.median(r["init_cpu_s"] for r in runs),
        "cold_s": statistics.median(r["first_s"] for r in runs),
        "cold_cpu_s": statistics.median(r["first_cpu_s"] for r in runs),
        "warm_s": statistics.median(w["s"] for w in warm_runs),
        "warm_cpu_s": statistics.median(w["cpu_s"] for w in warm_runs),
        "warm_range_s": (min(w["s"] for w in warm_runs), max(w["s"] for w in warm_runs)),
        "cold_range_s": (min(r["first_s"] for r in runs), max(r["first_s"] for r in runs)),
        "rss_mb": max(r["rss_mb"] for r in runs),
        "zip_mib": runs[0]["zip_mib"],
    }


def canned_ranges(endpoint: str, name: str, count: int, records: int) -> list[str]:
    """`count` invocation records of `records` records each, on a new stream of 10 shards (images)."""
    import urllib.request

    body = orjson.dumps(
        {
            "kind": "dynamodb",
            "name": name,
            "ranges": count,
            "records": records,
            "shards": min(10, count),
            "style": "images",
        }
    )
    with urllib.request.urlopen(f"{endpoint}/_bench/streams", data=body, timeout=120) as r:
        return [orjson.dumps(x).decode() for x in orjson.loads(r.read())["ranges"]]


def model(
    figures: dict[str, Any], messages: int, records: int, settings: dict[str, int], delay_ms: float
) -> dict[str, float]:
    """Time to drain and GB-seconds, with each invocation's duration taken as its measured CPU time at
    the function's share of a vCPU plus the round trips on its critical path (no overlap: an upper
    bound). Walls measured on a busy shared machine are shown beside it, not used."""
    share = settings["memory_mb"] / VCPU_MB
    batch = settings["batch_size"]
    waves = math.ceil(batch / settings["replayer_concurrency"])  # ranges one after another per invocation
    pages = max(1, math.ceil(records / 1000))
    trips = waves * (1 + pages + 2) * delay_ms / 1000  # GetShardIterator, GetRecords, two PutObject
    init = figures["init_cpu_s"] / share
    cold = figures["cold_cpu_s"] / share + trips + delay_ms / 1000  # + the mapping's lookup
    warm = figures["warm_cpu_s"] / share + trips
    invocations = math.ceil(messages / batch)
    environments = min(settings["max_concurrency"], invocations)
    per_environment = math.ceil(invocations / environments)
    drain_s = init + cold + (per_environment - 1) * warm
    billed_s = environments * (init + cold) + (invocations - environments) * warm
    gb_s = billed_s * settings["memory_mb"] / 1024
    total_records = messages * records
    return {
        "invocations": invocations,
        "environments": environments,
        "init_lambda_s": init,
        "cold_lambda_s": cold,
        "warm_lambda_s": warm,
        "drain_s": drain_s,
        "gb_s": gb_s,
        "gb_s_per_1000_records": gb_s / total_records * 1000,
        "records_per_s": total_records / drain_s,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument(
        "--records", type=int, action="append", help="records per range (default: 1000 and 100)"
    )
    parser.add_argument("--warm", type=int, default=3, help="warm invocations measured per process")
    parser.add_argument("--repeat", type=int, default=3, help="fresh processes (cold starts) measured")
    parser.add_argument("--delay-ms", type=float, default=20.0)
    args = parser.parse_args()
    settings = template_settings()
    print(
        f"deploy/template.yaml: BatchSize {settings['batch_size']}, MaximumConcurrency {settings['max_concurrency']} "
        f"(default), MemorySize {settings['memory_mb']} MB ({settings['memory_mb'] / VCPU_MB:.2f} vCPU), "
        f"REPLAYER_CONCURRENCY {settings['replayer_concurrency']}"
    )
    rows = [
        "| backlog | measured: init s (CPU) | cold invocation s (CPU) | warm invocation s (CPU, wall range) "
        "| model: init + cold, warm s | invocations x environments | time to drain | GB-s | GB-s per 1,000 records |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for records in args.records or [1000, 100]:
        figures = measure(records, args.warm, args.repeat, args.delay_ms, settings)
        m = model(figures, args.messages, records, settings, args.delay_ms)
        lo, hi = figures["warm_range_s"]
        rows.append(
            f"| {args.messages:,} messages x {records:,} records | {figures['init_s']:.3f} ({figures['init_cpu_s']:.3f}) "
            f"| {figures['cold_s']:.2f} ({figures['cold_cpu_s']:.2f}) "
            f"| {figures['warm_s']:.2f} ({figures['warm_cpu_s']:.2f}, {lo:.2f}-{hi:.2f}) "
            f"| {m['cold_lambda_s'] + m['init_lambda_s']:.2f}, {m['warm_lambda_s']:.2f} "
            f"| {m['invocations']} x {m['environments']} | {m['drain_s']:.0f} s | {m['gb_s']:.0f} "
            f"| {m['gb_s_per_1000_records']:.3f} |"
        )
        print(rows[-1], flush=True)
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
