"""A soak of `replayer run`: fed continuously on the canned endpoint until it has processed N records.

    .venv/bin/python -m bench.soak                         # 1,000,000 records, samples every 100,000
    .venv/bin/python -m bench.soak --records 200000 --every 20000

The queue is kept holding a few hundred invocation records (ranges of `--range-size` records,
spread over `--shards` shards of a stream whose records, shaped like a NEW_AND_OLD_IMAGES
stream's, are made page by page so the endpoint never holds them all), topped up as `run`
deletes them. Each time another `--every` records are archived, the service process is sampled:
its RSS (/proc), open descriptors, established TCP connections (its AWS clients' pool), asyncio
tasks (asked inside it, on SIGUSR1, by the small wrapper this file runs it in), and the
throughput over the interval. The figures: every sample, the change of each from the first
sample (after `--every` records) to the last, and the throughput's slope (least squares over
the intervals, in records/s per 100,000 records processed).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
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

# Runs `replayer run` in this process, answering SIGUSR1 with one JSON line of its own figures.
_CHILD = r"""
import asyncio, json, os, resource, signal, sys

loops = []


class _Policy(asyncio.DefaultEventLoopPolicy):
    def new_event_loop(self):
        loop = super().new_event_loop()
        loops.append(loop)
        return loop


asyncio.set_event_loop_policy(_Policy())
out_path = sys.argv[1]


def _sockets():
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    established = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "01" and fields[9] in inodes:
                established += 1
    return established


def _sample(signum, frame):
    loop = loops[-1] if loops else None
    tasks = len(asyncio.all_tasks(loop)) if loop is not None and not loop.is_closed() else 0
    rss_kb = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS:"))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    line = {
        "rss_mb": rss_kb / 1024,
        "fds": len(os.listdir("/proc/self/fd")),
        "connections": _sockets(),
        "tasks": tasks,
        "cpu_s": usage.ru_utime + usage.ru_stime,
    }
    with open(out_path, "a") as f:
        f.write(json.dumps(line) + "\n")


signal.signal(signal.SIGUSR1, _sample)
sys.argv = ["replayer", *sys.argv[2:]]
from replayer.cli import main

main()
"""


def _control(endpoint: str, path: str, body: Any = None) -> Any:
    data = orjson.dumps(body) if body is not None else None
    with urllib.request.urlopen(f"{endpoint}/_bench/{path}", data=data, timeout=60) as r:
        return orjson.loads(r.read())


def _ask(proc: subprocess.Popen[bytes], path: Path, seen: int) -> dict[str, Any]:
    """The service's figures: SIGUSR1, then its next line of `path` (it answers between two steps)."""
    proc.send_signal(signal.SIGUSR1)
    for _ in range(1000):
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) > seen:
            answer: dict[str, Any] = json.loads(lines[seen])
            return answer
        time.sleep(0.01)
    raise SystemExit("the service did not answer SIGUSR1 within 10 s")


def _slope(xs: list[float], ys: list[float]) -> float:
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


def soak(
    records: int, every: int, range_size: int, shards: int, delay_ms: float, depth: int
) -> dict[str, Any]:
    ranges = -(-records // range_size)
    server = canned.start(delay_ms)
    workdir = Path(tempfile.mkdtemp(prefix="replayer-soak-"))
    samples_path = workdir / "samples.jsonl"
    try:
        made = _control(
            server.endpoint,
            "streams",
            {
                "kind": "dynamodb",
                "name": "soak",
                "ranges": ranges,
                "records": range_size,
                "shards": shards,
                "style": "images",
                "lazy": True,
            },
        )
        bodies = [orjson.dumps(r).decode() for r in made["ranges"]]
        queue = "soak"
        queue_url = _control(server.endpoint, "fill", {"queue": queue, "bodies": bodies[:depth]})["queue_url"]
        fed = depth
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "REPLAYER_"))}
        env.update(
            AWS_ENDPOINT_URL=server.proxied,
            AWS_ACCESS_KEY_ID="bench",
            AWS_SECRET_ACCESS_KEY="bench",
            AWS_REGION="us-east-1",
            AWS_DEFAULT_REGION="us-east-1",
            REPLAYER_ALLOW_STREAMS="*",
            REPLAYER_LOG_LEVEL="warning",
        )
        command = [sys.executable, "-c", _CHILD, str(samples_path), "run", "--queue", queue_url]
        command += ["--to", "s3://bench/soak", "--concurrency", "32", "--http-port", "0"]
        err = (workdir / "stderr.txt").open("wb")
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=err)
        t0 = time.perf_counter()
        points: list[dict[str, Any]] = []
        next_sample, last_t, last_done, last_cpu = every, t0, 0, 0.0
        try:
            while True:
                left = _control(server.endpoint, f"depth/{queue}")["messages"]
                done = (fed - left) * range_size
                if fed < ranges and left < depth:  # keep it fed
                    more = bodies[fed : fed + depth - left]
                    _control(server.endpoint, "fill", {"queue": queue, "bodies": more})
                    fed += len(more)
                if done >= next_sample:
                    now = time.perf_counter()
                    sample = _ask(proc, samples_path, len(points))
                    sample |= {
                        "records": done,
                        "seconds": now - t0,
                        "records_per_s": (done - last_done) / (now - last_t),
                        "cpu_us_per_record": (sample["cpu_s"] - last_cpu) / (done - last_done) * 1e6,
                    }
                    last_cpu = sample["cpu_s"]
                    points.append(sample)
                    print(json.dumps(sample), flush=True)
                    _control(server.endpoint, "forget", {})
                    last_t, last_done = now, done
                    next_sample += every
                if done >= records:
                    break
                if proc.poll() is not None:
                    raise SystemExit(f"replayer run exited {proc.returncode}: see {workdir / 'stderr.txt'}")
                time.sleep(0.02)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
            err.close()
        first, last = points[0], points[-1]
        xs = [p["records"] / 100_000 for p in points[1:]]  # the first interval includes start-up
        ys = [p["records_per_s"] for p in points[1:]]
        cpus = [p["cpu_us_per_record"] for p in points[1:]]
        return {
            "records": last["records"],
            "seconds": last["seconds"],
            "samples": points,
            "change": {
                k: (last[k] - first[k]) / first[k] if first[k] else 0.0
                for k in ("rss_mb", "fds", "connections", "tasks")
            },
            "throughput_median": statistics.median(ys) if ys else 0.0,
            "throughput_slope_per_100k": _slope(xs, ys) if len(xs) > 1 else 0.0,
            # the service's own CPU per record: its throughput where the machine is shared
            "cpu_us_median": statistics.median(cpus) if cpus else 0.0,
            "cpu_us_slope_per_100k": _slope(xs, cpus) if len(xs) > 1 else 0.0,
            "stderr_tail": (workdir / "stderr.txt").read_text()[-1000:],
        }
    finally:
        server.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--every", type=int, default=100_000, help="sample after each this many records")
    parser.add_argument("--range-size", type=int, default=1000)
    parser.add_argument("--shards", type=int, default=10)
    parser.add_argument("--delay-ms", type=float, default=20.0)
    parser.add_argument("--depth", type=int, default=200, help="messages kept on the queue")
    args = parser.parse_args()
    result = soak(args.records, args.every, args.range_size, args.shards, args.delay_ms, args.depth)
    rows = [
        "| records | s | records/s (interval) | CPU µs/record (interval) | RSS MB | descriptors "
        "| TCP connections | asyncio tasks | CPU s |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for p in result["samples"]:
        rows.append(
            f"| {p['records']:,} | {p['seconds']:.1f} | {p['records_per_s']:,.0f} | {p['cpu_us_per_record']:.1f} "
            f"| {p['rss_mb']:.0f} | {p['fds']} | {p['connections']} | {p['tasks']} | {p['cpu_s']:.1f} |"
        )
    change = ", ".join(f"{k} {v * 100:+.0f} %" for k, v in result["change"].items())
    print("\n".join(rows))
    print(
        f"\nFrom the first sample to the last: {change}. Throughput: median {result['throughput_median']:,.0f} "
        f"records/s over the intervals after the first, slope {result['throughput_slope_per_100k']:+,.0f} "
        "records/s per 100,000 records; the service's CPU per record: median "
        f"{result['cpu_us_median']:.1f} µs, slope {result['cpu_us_slope_per_100k']:+.2f} µs per 100,000 records."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
