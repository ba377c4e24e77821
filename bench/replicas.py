"""Throughput of 1 and 2 `replayer drain` replicas sharing one queue (docs/scaling.md).

Against the canned endpoint (bench/endpoint.py, behind bench/latency_proxy.py adding --delay-ms to
every request): for each shape, a queue holding its invocation records is drained by N replicas
started together; the figure is records recovered / wall time until the last replica exits (each
replica's start-up included), with the replicas' CPU beside it. Medians of --repeat runs.

    python -m bench.replicas [--delay-ms 20] [--repeat 3] [--concurrency 8] [--ranges 200]
                             [--records 1000] [--shards 10,1]

Each shape: --ranges ranges of --records records, spread over --shards shards (one figure each).
Not part of `make test` (timings on a shared machine are only indications).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from bench import endpoint as canned

BIN = Path(sys.executable).parent


def _control(base: str, path: str, body: dict[str, Any]) -> Any:
    with urllib.request.urlopen(f"{base}/_bench/{path}", data=orjson.dumps(body), timeout=60) as r:
        return orjson.loads(r.read())


def drain(
    server: canned.Running, bodies: list[str], replicas: int, concurrency: int, run_id: str
) -> tuple[float, float]:
    """(wall seconds, CPU seconds of all replicas) to drain one queue holding bodies with N replicas."""
    queue = _control(server.endpoint, "fill", {"queue": f"q-{run_id}", "bodies": bodies})["queue_url"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "REPLAYER_"))}
    env |= {
        "AWS_ENDPOINT_URL": server.proxied,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_REGION": "us-east-1",
        "REPLAYER_ALLOW_STREAMS": "*",
    }
    command = [str(BIN / "replayer"), "drain", "--queue", queue, "--to", f"s3://bench/{run_id}"]
    command += ["--concurrency", str(concurrency), "--wait-seconds", "1", "--json"]
    # each summary to a file: a pipe left unread until exit would stall a replica with a long summary
    with contextlib.ExitStack() as files:
        outputs = [files.enter_context(tempfile.TemporaryFile()) for _ in range(replicas)]
        started = time.perf_counter()
        procs = [subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.DEVNULL) for out in outputs]
        cpu, recovered = 0.0, 0
        for proc, out in zip(procs, outputs, strict=True):
            _, status, usage = os.wait4(proc.pid, 0)
            out.seek(0)
            summary = out.read()
            if os.waitstatus_to_exitcode(status) != 0:
                raise SystemExit(f"a replica exited {os.waitstatus_to_exitcode(status)}: {summary[-2000:]!r}")
            cpu += usage.ru_utime + usage.ru_stime
            recovered += orjson.loads(summary)["totals"]["records_recovered"]
    wall = time.perf_counter() - started
    expected = sum(orjson.loads(b)["DDBStreamBatchInfo"]["batchSize"] for b in bodies)
    if recovered != expected:
        raise SystemExit(f"{replicas} replicas recovered {recovered} records, expected {expected}")
    return wall, cpu


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--delay-ms", type=float, default=20.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--ranges", type=int, default=200)
    parser.add_argument("--records", type=int, default=1000, help="records per range")
    parser.add_argument("--shards", default="10,1", help="comma-separated shard counts, one shape each")
    args = parser.parse_args()
    server = canned.start(args.delay_ms)
    try:
        print(
            f"replayer drain, --concurrency {args.concurrency}, {args.delay_ms:g} ms a request, {os.cpu_count()} cores"
        )
        print("| queue | replicas | records/s (median) | wall s | replicas' CPU s |")
        print("| --- | --- | --- | --- | --- |")
        for shape, count in enumerate(args.shards.split(",")):
            ranges, size, shards = args.ranges, args.records, int(count)
            made = _control(
                server.endpoint,
                "streams",
                {
                    "kind": "dynamodb",
                    "name": f"replicas-{shape}",
                    "ranges": ranges,
                    "records": size,
                    "shards": shards,
                },
            )
            bodies = [orjson.dumps(r).decode() for r in made["ranges"]]
            for replicas in (1, 2):
                runs = [
                    drain(server, bodies, replicas, args.concurrency, f"{shape}-{replicas}-{i}")
                    for i in range(args.repeat)
                ]
                wall = statistics.median(w for w, _ in runs)
                cpu = statistics.median(c for _, c in runs)
                print(
                    f"| {ranges} ranges x {size:,} records on {shards} shard{'s' if shards > 1 else ''} | {replicas} "
                    f"| {ranges * size / wall:,.0f} | {wall:.2f} | {cpu:.2f} |",
                    flush=True,
                )
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
