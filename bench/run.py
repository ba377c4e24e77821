"""replayer against the hand-written baseline, on the same data, in the same run.

    .venv/bin/python -m bench.run                 # both scenarios, 3 runs each, medians
    .venv/bin/python -m bench.run --smoke         # tiny sizes: keeps the harness working (make test runs it)
    .venv/bin/python -m bench.run --write bench/RESULTS.md

Starts moto's server and a latency proxy (each its own process, so neither is counted
as the client's CPU), prepares N ranges of M records (one table, hence one shard, per
range), then times `replayer replay`, `replayer drain` (when the command exists) and
bench/baseline.py through the proxy. Client CPU and peak RSS come from the client
process's own rusage (os.wait4); the emulator's CPU from /proc.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import boto3

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass
class Scenario:
    name: str
    ranges: int
    records: int
    delay_ms: float
    concurrency: int


SCENARIOS = {
    "throughput": Scenario("throughput", 50, 1000, 20.0, 32),
    "memory": Scenario("memory", 10, 10_000, 20.0, 32),
}
SMOKE = {
    "throughput": Scenario("throughput", 3, 30, 2.0, 4),
    "memory": Scenario("memory", 2, 50, 0.0, 4),
}


@dataclass
class Run:
    wall: float
    cpu: float
    rss_mb: float
    emulator_cpu: float
    records: int


@dataclass
class Measured:
    runs: dict[str, list[Run]] = field(default_factory=dict)

    def median(self, who: str, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in self.runs[who])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class Emulator:
    """moto_server and the latency proxy, as subprocesses."""

    def __init__(self, delay_ms: float, kind: str) -> None:
        port = _free_port()
        self.endpoint = f"http://127.0.0.1:{port}"
        server = (
            [str(BIN / "moto_server")]
            if kind == "moto"
            else [sys.executable, str(ROOT / "bench" / "lean_moto.py")]
        )
        self.moto = subprocess.Popen(
            [*server, "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(200):
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1)
                break
            except OSError:
                time.sleep(0.05)
        self.proxy = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "latency_proxy.py"), "--upstream", f"127.0.0.1:{port}",
             "--delay-ms", str(delay_ms)],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        assert self.proxy.stdout is not None
        self.proxied = f"http://127.0.0.1:{self.proxy.stdout.readline().strip()}"

    def cpu(self) -> float:
        return _proc_cpu(self.moto.pid)

    def close(self) -> None:
        for p in (self.proxy, self.moto):
            p.terminate()
            p.wait(timeout=10)


def _env(endpoint: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "REPLAYER_"))}
    env.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_REGION="us-east-1",
        AWS_DEFAULT_REGION="us-east-1",
    )
    return env


def prepare(endpoint: str, scenario: Scenario, workdir: Path) -> tuple[Path, str]:
    """One table per range, M items each; returns the invocation records file and a queue URL."""
    os.environ.update(_env(endpoint))
    ddb = boto3.client("dynamodb")
    streams = boto3.client("dynamodbstreams")
    boto3.client("s3").create_bucket(Bucket="bench")
    sqs = boto3.client("sqs")
    queue = sqs.create_queue(QueueName=f"bench-{scenario.name}", Attributes={"VisibilityTimeout": "300"})[
        "QueueUrl"
    ]
    lines = []
    for t in range(scenario.ranges):
        name = f"bench-{scenario.name}-{t}"
        arn = ddb.create_table(
            TableName=name,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )["TableDescription"]["LatestStreamArn"]
        for i in range(0, scenario.records, 25):
            items = [
                {"PutRequest": {"Item": {"pk": {"S": f"order-{j}"}, "total": {"N": str(j * 7)},
                                         "note": {"S": "x" * 160}, "tags": {"SS": ["a", "b"]}}}}
                for j in range(i, min(scenario.records, i + 25))
            ]  # fmt: skip
            ddb.batch_write_item(RequestItems={name: items})
        shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]
        first = int(shard["SequenceNumberRange"]["StartingSequenceNumber"])
        lines.append(
            json.dumps(
                {
                    "requestContext": {
                        "condition": "RetryAttemptsExhausted",
                        "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:bench",
                    },
                    "version": "1.0",
                    "timestamp": "2026-11-26T00:00:00Z",
                    "DDBStreamBatchInfo": {
                        "shardId": shard["ShardId"],
                        "startSequenceNumber": str(first),
                        "endSequenceNumber": str(first + scenario.records - 1),
                        "approximateArrivalOfFirstRecord": "2026-11-26T00:00:00Z",
                        "approximateArrivalOfLastRecord": "2026-11-26T00:00:00Z",
                        "batchSize": scenario.records,
                        "streamArn": arn,
                    },
                }
            )
        )
    path = workdir / f"{scenario.name}.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path, queue


def fill_queue(endpoint: str, queue: str, ranges: Path) -> None:
    os.environ.update(_env(endpoint))
    sqs = boto3.client("sqs")
    bodies = [line for line in ranges.read_text().splitlines() if line]
    for i in range(0, len(bodies), 10):
        sqs.send_message_batch(
            QueueUrl=queue,
            Entries=[{"Id": str(n), "MessageBody": b} for n, b in enumerate(bodies[i : i + 10])],
        )


def measure(cmd: list[str], env: dict[str, str], emulator: Emulator) -> tuple[Run, str]:
    emu0 = emulator.cpu()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # wait4 gives this child's own rusage: user+sys and peak RSS, nothing of the emulator
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    out = proc.stdout.read().decode() if proc.stdout else ""
    err = proc.stderr.read().decode() if proc.stderr else ""
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} exited {code}:\n{out[-2000:]}\n{err[-2000:]}")
    run = Run(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, emulator.cpu() - emu0, 0)
    return run, out


def _records_of(who: str, out: str) -> int:
    if who == "baseline":
        return int(out.strip().splitlines()[-1])
    return int(json.loads(out)["totals"]["records_recovered"])


def has_drain() -> bool:
    return subprocess.run([str(BIN / "replayer"), "drain", "--help"], capture_output=True).returncode == 0


def run_scenario(scenario: Scenario, repeat: int, workdir: Path, emulator_kind: str) -> Measured:
    emulator = Emulator(scenario.delay_ms, emulator_kind)
    measured = Measured()
    try:
        ranges, queue = prepare(emulator.endpoint, scenario, workdir)
        env = _env(emulator.proxied)
        drain = has_drain()
        for i in range(repeat):
            commands = {
                "baseline": [sys.executable, str(ROOT / "bench" / "baseline.py"), str(ranges), f"s3://bench/base-{i}"],
                "replay": [str(BIN / "replayer"), "replay", str(ranges), "--to", f"s3://bench/replay-{i}",
                           "--concurrency", str(scenario.concurrency), "--json"],
            }  # fmt: skip
            if drain:
                fill_queue(emulator.endpoint, queue, ranges)
                commands["drain"] = [str(BIN / "replayer"), "drain", "--queue", queue, "--to", f"s3://bench/drain-{i}",
                                     "--concurrency", str(scenario.concurrency), "--json"]  # fmt: skip
            for who, cmd in commands.items():
                run, out = measure(cmd, env, emulator)
                run.records = _records_of(who, out)
                expected = scenario.ranges * scenario.records
                if run.records != expected:
                    raise SystemExit(f"{who} recovered {run.records} records, expected {expected}")
                measured.runs.setdefault(who, []).append(run)
    finally:
        emulator.close()
    return measured


def import_time(module: str, repeat: int) -> float | None:
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    times = []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if out.returncode != 0:
            return None
        times.append(float(out.stdout))
    return statistics.median(times)


def report(
    results: dict[str, tuple[Scenario, Measured]],
    handler_import: float | None,
    runtime_import: float | None,
    import_runs: int,
) -> str:
    rows = [
        "| scenario | client | wall s | records/s | x baseline | client CPU ms / 1000 rec | peak RSS MB | emulator CPU s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, (sc, m) in results.items():
        base_rate = sc.ranges * sc.records / m.median("baseline", "wall")
        for who in m.runs:
            wall = m.median(who, "wall")
            rate = sc.ranges * sc.records / wall
            cpu_per_k = m.median(who, "cpu") / (sc.ranges * sc.records) * 1000 * 1000
            rows.append(
                f"| {name} ({sc.ranges}x{sc.records}, {sc.delay_ms:g} ms, c={sc.concurrency}) | {who} | {wall:.2f} "
                f"| {rate:,.0f} | {rate / base_rate:.1f} | {cpu_per_k:.1f} | {m.median(who, 'rss_mb'):.0f} "
                f"| {m.median(who, 'emulator_cpu'):.2f} |"
            )
    imp = (
        f"{handler_import * 1000:.0f} ms"
        if handler_import is not None
        else "n/a (no replayer.lambda_handler)"
    )
    full = f"{runtime_import * 1000:.0f} ms" if runtime_import is not None else "n/a"
    rows += [
        "",
        f"Lambda handler module import (median of {import_runs} runs): {imp}; with the runtime it loads on the first "
        f"invocation (SDK, core, service): {full}",
    ]
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one run: keeps the harness working")
    parser.add_argument("--scenario", choices=[*SCENARIOS, "all"], default="all")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--write", type=Path, help="also write the table into this markdown file")
    parser.add_argument(
        "--emulator",
        choices=["lean-moto", "moto"],
        default="lean-moto",
        help="lean-moto: moto with a plain-JSON GetRecords answer (see bench/lean_moto.py); moto: as shipped",
    )
    args = parser.parse_args()
    table = SMOKE if args.smoke else SCENARIOS
    repeat = 1 if args.smoke else args.repeat
    names = list(table) if args.scenario == "all" else [args.scenario]
    workdir = Path(tempfile.mkdtemp(prefix="replayer-bench-"))
    try:
        results = {n: (table[n], run_scenario(table[n], repeat, workdir, args.emulator)) for n in names}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    runs = 1 if args.smoke else 5
    text = report(
        results,
        import_time("replayer.lambda_handler", runs),
        import_time("replayer.sources.lambda_", runs),
        runs,
    )
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; emulator: {args.emulator}"
    print(f"machine: {machine}\n\n{text}")
    if args.write:
        args.write.write_text(_results_page(text, machine, repeat))
    return 0


def _results_page(table: str, machine: str, repeat: int) -> str:
    notes_path = ROOT / "bench" / "NOTES.md"
    notes = notes_path.read_text() if notes_path.exists() else ""
    return (
        "# Benchmark results\n\n"
        f"Machine: {machine}. Command: `.venv/bin/python -m bench.run --write bench/RESULTS.md` "
        f"(medians of {repeat} runs; emulator and latency proxy in their own processes).\n\n"
        f"{table}\n\n{notes}"
    )


if __name__ == "__main__":
    sys.exit(main())
