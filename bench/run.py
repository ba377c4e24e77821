"""replayer against the hand-written baseline and the floor, on a canned endpoint, in one run.

    .venv/bin/python -m bench.run                       # every shape, medians of 3
    .venv/bin/python -m bench.run --smoke               # tiny sizes, one run (make test runs it)
    .venv/bin/python -m bench.run --shapes a,d --repeat 5
    .venv/bin/python -m bench.run --cold-start --write bench/RESULTS.md
    .venv/bin/python -m bench.run --shapes backlog --baseline-once   # #26's shapes: e to k

bench/endpoint.py answers from memory (pages serialized once at start; almost no CPU per
request) in its own process, behind bench/latency_proxy.py (20 ms per request), so what is
measured is the client. Shapes:

    a  50 ranges x 1,000 records on 10 shards   (one reader per shard at a time)
    b  50 ranges x 1,000 records on one shard   (ranges read one after another)
    c  10 ranges x 10,000 records on 10 shards  (memory: compared with 10 x 1,000, a's small run)
    d  `replayer drain` of a queue holding a's invocation records (compared with `replay` of a)

and the backlog after an outage (#26), records shaped like a NEW_AND_OLD_IMAGES stream's (keys
and both images: strings, numbers, sets, binary; ~1.1 KB of JSON each):

    e  300 ranges x 1,000 records on 10 shards
    f  1,000 ranges x 100 records on 50 shards  (many small ranges: the shape after bisecting)
    g  300 ranges x 1,000 records on one shard
    h, i  `replayer drain`, `replayer run` of a queue holding e's ranges (compared with e's replay)
    j, k  `replayer drain`, `replayer run` of a queue holding f's ranges (compared with f's replay)

`run` never ends by itself: its wall is until the endpoint has seen every message deleted; it is
then stopped (SIGTERM), and its CPU and peak RSS include the stop.

Every client runs at two sizes (the shape and one fifth of it), so its CPU splits into a
start-up part and a marginal cost per record (the slope between the two). The floor is what
any Python client must do per record (orjson decode of the page, one key added, orjson
encode, gzip level 1), sampled in a fresh process after every client run of this run (the
median is reported: the machine's speed drifts). CPU and peak RSS are each client
process's own (os.wait4); the endpoint's and the proxy's CPU are shown apart.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench import endpoint as canned

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CONCURRENCY = 32


@dataclass(frozen=True)
class Shape:
    name: str
    ranges: int
    records: int
    shards: int
    client: str  # replay | drain | run
    note: str
    style: str = "small"  # the records: bench/endpoint.py's STYLES

    @property
    def total(self) -> int:
        return self.ranges * self.records

    def small(self) -> Shape:
        """The same shape at a fifth of the ranges (at least 2): the second size for the CPU slope."""
        ranges = max(2, self.ranges // 5)
        return dataclasses.replace(self, ranges=ranges, shards=min(self.shards, ranges))

    @property
    def base(self) -> str:
        """The replay shape whose ranges a drain or run shape reads."""
        return _SAME_AS.get(self.name, self.name)


# drain/run shapes -> the replay shape whose ranges they read (and whose replay they are compared with)
_SAME_AS = {"d": "a", "h": "e", "i": "e", "j": "f", "k": "f"}

SHAPES = {
    "a": Shape("a", 50, 1000, 10, "replay", "50 x 1,000 on 10 shards"),
    "b": Shape("b", 50, 1000, 1, "replay", "50 x 1,000 on one shard"),
    "c": Shape("c", 10, 10_000, 10, "replay", "10 x 10,000 on 10 shards"),
    "d": Shape("d", 50, 1000, 10, "drain", "drain of a queue holding (a)"),
    # the backlog after an outage (#26): records with both images, as NEW_AND_OLD_IMAGES streams send
    "e": Shape("e", 300, 1000, 10, "replay", "300 x 1,000 on 10 shards", "images"),
    "f": Shape("f", 1000, 100, 50, "replay", "1,000 x 100 on 50 shards", "images"),
    "g": Shape("g", 300, 1000, 1, "replay", "300 x 1,000 on one shard", "images"),
    "h": Shape("h", 300, 1000, 10, "drain", "drain of a queue holding (e)", "images"),
    "i": Shape("i", 300, 1000, 10, "run", "run fed a queue holding (e)", "images"),
    "j": Shape("j", 1000, 100, 50, "drain", "drain of a queue holding (f)", "images"),
    "k": Shape("k", 1000, 100, 50, "run", "run fed a queue holding (f)", "images"),
}
SMOKE = {
    "a": Shape("a", 10, 20, 5, "replay", "smoke"),
    "b": Shape("b", 10, 20, 1, "replay", "smoke"),
    "c": Shape("c", 5, 100, 5, "replay", "smoke"),
    "d": Shape("d", 10, 20, 5, "drain", "smoke"),
    "e": Shape("e", 10, 30, 5, "replay", "smoke", "images"),
    "f": Shape("f", 20, 5, 10, "replay", "smoke", "images"),
    "g": Shape("g", 10, 30, 1, "replay", "smoke", "images"),
    "h": Shape("h", 10, 30, 5, "drain", "smoke", "images"),
    "i": Shape("i", 10, 30, 5, "run", "smoke", "images"),
    "j": Shape("j", 20, 5, 10, "drain", "smoke", "images"),
    "k": Shape("k", 20, 5, 10, "run", "smoke", "images"),
}


@dataclass
class Run:
    wall: float
    cpu: float
    rss_mb: float
    server_cpu: float
    records: int
    requests: dict[str, int] = field(default_factory=dict)
    floor_us: float = (
        0.0  # the floor sampled right before and after this run (mean): the machine's speed then
    )

    @property
    def cpu_in_floors(self) -> float:
        """CPU in units of the floor's per-record cost at the time: the machine's drift cancels out."""
        return self.cpu / (self.floor_us * 1e-6)


@dataclass
class Result:
    shape: Shape
    runs: dict[str, list[Run]] = field(default_factory=dict)  # client[-small] -> runs

    def median(self, who: str, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in self.runs[who])

    def split(self, who: str) -> tuple[float, float]:
        """(start-up CPU s, marginal CPU µs per record), from the full and the small runs."""
        big, small = self.shape, self.shape.small()
        slope = (self.median(who, "cpu") - self.median(f"{who}-small", "cpu")) / (big.total - small.total)
        return self.median(f"{who}-small", "cpu") - slope * small.total, slope * 1e6

    def marginal_in_floors(self, who: str) -> float:
        """The marginal cost per record in floors, each run's CPU taken against the floor sampled
        right before and after it (the VM's speed drifts within a run, at times by half or more)."""
        big, small = self.shape, self.shape.small()
        return (self.median(who, "cpu_in_floors") - self.median(f"{who}-small", "cpu_in_floors")) / (
            big.total - small.total
        )


class Bench:
    """One endpoint (and proxy) for the whole run; streams per shape and size made on it."""

    def __init__(self, delay_ms: float, workdir: Path) -> None:
        self.server = canned.start(delay_ms)
        self.delay_ms = delay_ms
        self.workdir = workdir
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "REPLAYER_"))}
        self.env.update(
            AWS_ENDPOINT_URL=self.server.proxied,
            AWS_ACCESS_KEY_ID="bench",
            AWS_SECRET_ACCESS_KEY="bench",
            AWS_REGION="us-east-1",
            AWS_DEFAULT_REGION="us-east-1",
            REPLAYER_ALLOW_STREAMS="*",
        )
        self._made: dict[tuple[str, int, int, int, str], list[str]] = {}

    def control(self, path: str, body: dict[str, Any] | None = None) -> Any:
        data = orjson.dumps(body) if body is not None else None
        with urllib.request.urlopen(f"{self.server.endpoint}/_bench/{path}", data=data, timeout=60) as r:
            return orjson.loads(r.read())

    def ranges(self, shape: Shape) -> list[str]:
        """The shape's invocation records (JSON lines), its streams made on first use."""
        # drain and run read the very ranges of the replay shape they are compared with
        key = (shape.base, shape.ranges, shape.records, shape.shards, shape.style)
        if key not in self._made:
            made = self.control(
                "streams",
                {
                    "kind": "dynamodb",
                    "name": f"bench-{shape.base}-{shape.ranges}x{shape.records}-{shape.shards}",
                    "ranges": shape.ranges,
                    "records": shape.records,
                    "shards": shape.shards,
                    "style": shape.style,
                },
            )
            self._made[key] = [orjson.dumps(r).decode() for r in made["ranges"]]
        return self._made[key]

    def ranges_file(self, shape: Shape) -> Path:
        path = self.workdir / f"{shape.base}-{shape.ranges}x{shape.records}-{shape.shards}.jsonl"
        if not path.exists():
            path.write_text("\n".join(self.ranges(shape)) + "\n")
        return path

    def command(self, who: str, shape: Shape, run_id: str) -> list[str]:
        if who == "baseline":
            return [
                sys.executable,
                str(ROOT / "bench" / "baseline.py"),
                str(self.ranges_file(shape)),
                f"s3://bench/{run_id}",
            ]
        common = ["--to", f"s3://bench/{run_id}", "--concurrency", str(CONCURRENCY)]
        if who in ("drain", "run"):
            queue = self.control("fill", {"queue": f"q-{run_id}", "bodies": self.ranges(shape)})["queue_url"]
            if who == "run":  # no summary of its own: the archive's manifests are counted instead
                return [str(BIN / "replayer"), who, "--queue", queue, *common, "--http-port", "0"]
            return [str(BIN / "replayer"), who, "--queue", queue, *common, "--json"]
        common.append("--json")
        return [str(BIN / "replayer"), "replay", str(self.ranges_file(shape)), *common]

    def measure(self, who: str, shape: Shape, run_id: str) -> Run:
        cmd = self.command(who, shape, run_id)
        before = self.control("stats")["requests"]
        server0 = self.server.cpu()
        # Files, not pipes: a client that logs more than a pipe holds would block while we wait4.
        with tempfile.TemporaryFile() as out_file, tempfile.TemporaryFile() as err_file:
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, env=self.env, stdout=out_file, stderr=err_file)
            wall = None
            if who == "run":  # it never ends by itself: its wall is until the queue is empty, then stop it
                wall = self.until_emptied(f"q-{run_id}", proc, t0)
                proc.send_signal(signal.SIGTERM)
            # wait4: this child's own rusage (user+sys, peak RSS), nothing of the endpoint or proxy
            _, status, usage = os.wait4(proc.pid, 0)
            wall = wall if wall is not None else time.perf_counter() - t0
            out_file.seek(0)
            err_file.seek(0)
            out, err = out_file.read().decode(), err_file.read().decode()
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            raise SystemExit(f"{' '.join(cmd[:3])} exited {code}:\n{out[-2000:]}\n{err[-2000:]}")
        if who == "baseline":
            records = int(out.strip().splitlines()[-1])
        elif who == "run":
            records = self.control(f"manifests/bench/{run_id}/")["manifests"] * shape.records
        else:
            records = _recovered(out)
        if records != shape.total:
            raise SystemExit(
                f"{who} recovered {records} records of shape {shape.name}, expected {shape.total}"
            )
        after = self.control("stats")["requests"]
        requests = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
        return Run(
            wall,
            usage.ru_utime + usage.ru_stime,
            usage.ru_maxrss / 1024,
            self.server.cpu() - server0,
            records,
            requests,
        )

    def until_emptied(self, queue: str, proc: subprocess.Popen[bytes], t0: float) -> float:
        """Seconds from `t0` until every message of `queue` is deleted (polled every 25 ms: more often,
        the polling's own CPU, here and in the endpoint, slows the run it measures on two cores)."""
        while self.control(f"depth/{queue}")["messages"]:
            if proc.poll() is not None:
                raise SystemExit(f"replayer run exited {proc.returncode} before emptying {queue}")
            time.sleep(0.025)
        return time.perf_counter() - t0

    def close(self) -> None:
        self.server.close()


def _recovered(out: str) -> int:
    return int(json.loads(out)["totals"]["records_recovered"])


GROUPS = {"issue15": "a,b,c,d", "backlog": "e,f,g,h,i,j,k", "all": ",".join(SHAPES)}


def _shape_names(spec: str) -> list[str]:
    names = []
    for part in spec.split(","):
        names += GROUPS[part.strip()].split(",") if part.strip() in GROUPS else [part.strip()]
    unknown = [n for n in names if n not in SHAPES]
    if unknown:
        raise SystemExit(
            f"--shapes: unknown {', '.join(unknown)} (shapes {','.join(SHAPES)}; groups {', '.join(GROUPS)})"
        )
    return names


def run_shape(
    bench: Bench, shape: Shape, repeat: int, with_baseline: bool, floor: Floor, baseline_repeat: int = 0
) -> Result:
    result = Result(shape)
    for i in range(repeat):
        plan = [("baseline", shape)] if with_baseline and i < (baseline_repeat or repeat) else []
        if shape.client != "replay":  # drain and run against a replay of the same ranges right before
            plan.append(("replay", shape))
        plan += [(shape.client, shape), (f"{shape.client}-small", shape.small())]
        for who, sized in plan:
            run = bench.measure(who.removesuffix("-small"), sized, f"{shape.name}-{who}-{i}")
            before = floor.samples[-1] if floor.samples else floor.sample()
            run.floor_us = (before + floor.sample()) / 2  # the machine's speed around the run
            result.runs.setdefault(who, []).append(run)
    return result


_FLOOR = """
import gzip, statistics, sys, time
import orjson
page = open(sys.argv[1], "rb").read()
arn = sys.argv[2]
times = []
for _ in range(15):
    t0 = time.process_time()
    lines = []
    for record in orjson.loads(page)["Records"]:
        record["eventSourceARN"] = arn
        lines.append(orjson.dumps(record))
    gzip.compress(b"\\n".join(lines), compresslevel=1)
    times.append(time.process_time() - t0)
print(statistics.median(times) / len(lines) * 1e6)
"""


class Floor:
    """µs per record any Python client needs: decode a 1,000-record page, add one key, encode, gzip 1.

    Sampled in a fresh process after every client run (the machine's speed drifts over a run, by
    half at times on this VM), and reported as the median of the samples.
    """

    def __init__(self, bench: Bench, style: str = "small") -> None:
        self.style = style
        first = json.loads(bench.ranges(Shape("floor", 1, 1000, 1, "replay", "", style))[0])[
            "DDBStreamBatchInfo"
        ]
        self.arn = first["streamArn"]
        iterator = _post_json(
            bench.server.endpoint,
            "DynamoDBStreams_20120810.GetShardIterator",
            {"StreamArn": self.arn, "ShardId": first["shardId"], "ShardIteratorType": "TRIM_HORIZON"},
        )
        self.page = bench.workdir / f"floor-page-{style}.json"
        self.page.write_bytes(
            _post_raw(
                bench.server.endpoint,
                "DynamoDBStreams_20120810.GetRecords",
                {"ShardIterator": iterator["ShardIterator"], "Limit": 1000},
            )
        )
        self.samples: list[float] = []

    def sample(self) -> float:
        done = subprocess.run(
            [sys.executable, "-c", _FLOOR, str(self.page), self.arn],
            capture_output=True,
            text=True,
            check=True,
        )
        self.samples.append(float(done.stdout))
        return self.samples[-1]

    @property
    def us(self) -> float:
        if not self.samples:
            self.sample()
        return statistics.median(self.samples)


def _post_raw(url: str, target: str, body: dict[str, Any]) -> bytes:
    request = urllib.request.Request(url, data=orjson.dumps(body), headers={"X-Amz-Target": target})
    with urllib.request.urlopen(request, timeout=30) as r:
        data: bytes = r.read()
        return data


def _post_json(url: str, target: str, body: dict[str, Any]) -> Any:
    return orjson.loads(_post_raw(url, target, body))


def startup_cpu(repeat: int) -> tuple[float, float]:
    """Median CPU s of `import replayer.cli` and of `replayer replay --help`, each in a fresh process."""

    def cpu_of(cmd: list[str]) -> float:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, _, usage = os.wait4(proc.pid, 0)
        return float(usage.ru_utime + usage.ru_stime)

    bare = [cpu_of([sys.executable, "-c", "pass"]) for _ in range(repeat)]
    imp = [cpu_of([sys.executable, "-c", "import replayer.cli"]) for _ in range(repeat)]
    helped = [cpu_of([str(BIN / "replayer"), "replay", "--help"]) for _ in range(repeat)]
    base = statistics.median(bare)
    return statistics.median(imp) - base, statistics.median(helped) - base


def cold_start(bench: Bench) -> dict[str, float] | None:
    """Init + first invocation (a 1,000-record range through SQS), the Lambda zip as `make package` builds it."""
    from bench import cold_start as cold

    return cold.measure(bench.server.proxied, bench.ranges(SHAPES["a"])[0], bench.workdir)


def report(
    results: list[Result],
    floors: dict[str, Floor],
    delay_ms: float,
    repeat: int,
    startup: tuple[float, float] | None,
    cold: dict[str, float] | None,
) -> str:
    rows = [
        "| shape | client | wall s | records/s | x baseline | client CPU s | start-up CPU s | marginal µs/rec "
        "| x floor | peak RSS MB | GetShardIterator+GetRecords / range | endpoint+proxy CPU s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    base_walls = {r.shape.name: r.median("baseline", "wall") for r in results if "baseline" in r.runs}
    for r in results:
        sh = r.shape
        base = base_walls.get(sh.base)
        for who in r.runs:
            small = who.endswith("-small")
            sized = sh.small() if small else sh
            wall = r.median(who, "wall")
            ratio = f"{base / wall:.1f}" if base and not small else ""
            split = ("", "", "")
            if not small and who != "baseline" and f"{who}-small" in r.runs:
                start, marginal = r.split(who)
                split = (f"{start:.2f}", f"{marginal:.1f}", f"{r.marginal_in_floors(who):.1f}")
            elif who == "baseline":
                per = r.median(who, "cpu") / sized.total * 1e6
                split = ("", f"({per:.0f} overall)", "")
            reqs = r.runs[who][len(r.runs[who]) // 2].requests
            reads = sum(v for k, v in reqs.items() if k.split(".")[-1] in ("GetShardIterator", "GetRecords"))
            rows.append(
                f"| {sh.name}: {sized.ranges}x{sized.records:,}, {sized.shards} shard{'s' * (sized.shards > 1)} "
                f"| {who} | {wall:.2f} | {sized.total / wall:,.0f} | {ratio} | {r.median(who, 'cpu'):.2f} "
                f"| {split[0]} | {split[1]} | {split[2]} | {r.median(who, 'rss_mb'):.0f} "
                f"| {reads / sized.ranges:.1f} | {r.median(who, 'server_cpu'):.2f} |"
            )
    lines = [
        f"Latency {delay_ms:g} ms per request, concurrency {CONCURRENCY}, medians of {repeat}.",
        "",
        *rows,
        "",
    ]
    for style, floor in floors.items():
        lines.append(
            f"Floor (orjson decode of a 1,000-record page, one key added, orjson encode, gzip level 1), "
            f"{style} records, measured in this run: {floor.us:.1f} µs per record (median of {len(floor.samples)} "
            f"samples, one in a fresh process before the first client run and after each: "
            f"{min(floor.samples):.1f} to {max(floor.samples):.1f})"
        )
    lines += [line for r in results if (line := one_shard_line(r, delay_ms))]
    lines += queue_lines(results)
    if startup is not None:
        lines.append(
            f"Start-up CPU above a bare interpreter: `import replayer.cli` {startup[0]:.3f} s, "
            f"`replayer replay --help` {startup[1]:.3f} s"
        )
    if cold is not None:
        lines.append(
            f"Lambda cold start, zip as `make package` builds it ({cold['zip_mib']:.1f} MiB): init {cold['init_s']:.3f} s "
            f"wall / {cold['init_cpu_s']:.3f} s CPU, first invocation (1,000 records) {cold['first_s']:.3f} s wall "
            f"/ {cold['first_cpu_s']:.3f} s CPU, peak RSS {cold['rss_mb']:.0f} MB"
        )
    return "\n".join(lines)


def queue_lines(results: list[Result]) -> list[str]:
    """`drain` and `run` against `replay` of the same ranges run right before each (paired: the
    machine's speed drifts between runs further apart), the median of the pairs' ratios."""
    lines = []
    for r in results:
        who = r.shape.client
        if who == "replay" or "replay" not in r.runs:
            continue
        pairs = list(zip(r.runs["replay"], r.runs[who], strict=True))
        ratios = sorted(q.wall / p.wall - 1 for p, q in pairs)
        cpu = statistics.median(q.cpu / p.cpu - 1 for p, q in pairs)
        shown = "; ".join(f"{p.wall:.2f} / {q.wall:.2f}" for p, q in pairs)
        lines.append(
            f"{r.shape.name} ({who} of {r.shape.base}'s ranges): wall {statistics.median(ratios) * 100:+.0f} % against "
            f"replay right before it (median of {len(pairs)} pairs, {ratios[0] * 100:+.0f} to {ratios[-1] * 100:+.0f} %; "
            f"replay / {who} s: {shown}); CPU {cpu * 100:+.0f} %"
        )
    return lines


def one_shard_line(result: Result, delay_ms: float) -> str | None:
    """Shape (b) against one reader per shard: its wall split, over two sizes, into a start-up part
    and a part per range, the latter against the round trips a range needs when read one after
    another (one GetRecords with the previous range's NextShardIterator; two without it)."""
    if result.shape.shards != 1 or "replay" not in result.runs or "replay-small" not in result.runs:
        return None
    big, small = result.shape, result.shape.small()
    wall, wall_small = result.median("replay", "wall"), result.median("replay-small", "wall")
    per_range = (wall - wall_small) / (big.ranges - small.ranges)
    start = wall_small - per_range * small.ranges
    trip = delay_ms / 1000
    one, two = start + big.ranges * trip, start + 2 * big.ranges * trip
    return (
        f"{big.name} (one shard): wall {wall:.2f} s = start-up {start:.2f} s (intercept of the two sizes' walls) "
        f"+ {per_range * 1000:.1f} ms per range against {delay_ms:g} ms for one round trip; "
        f"{wall / one:.2f}x one reader per shard at one round trip per range ({one:.2f} s), "
        f"{wall / two:.2f}x at two (GetShardIterator + GetRecords: {two:.2f} s)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one run: keeps the harness working")
    parser.add_argument(
        "--shapes",
        default="a,b,c,d",
        help=f"comma-separated shape names ({','.join(SHAPES)}) or groups ({', '.join(GROUPS)})",
    )
    parser.add_argument(
        "--baseline-once", action="store_true", help="the (slow) baseline once per shape, not --repeat times"
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--delay-ms", type=float, default=20.0)
    parser.add_argument("--no-baseline", action="store_true", help="skip the (slow) hand-written baseline")
    parser.add_argument(
        "--cold-start", action="store_true", help="also build the Lambda zip and time a cold start"
    )
    parser.add_argument("--write", type=Path, help="also write the figures into this markdown file")
    args = parser.parse_args()
    table = SMOKE if args.smoke else SHAPES
    repeat = 1 if args.smoke else args.repeat
    delay = 2.0 if args.smoke else args.delay_ms
    workdir = Path(tempfile.mkdtemp(prefix="replayer-bench-"))
    bench = Bench(delay, workdir)
    try:
        results = []
        floors: dict[str, Floor] = {}
        for name in _shape_names(args.shapes):
            shape = table[name]
            # g is measured against one reader per shard; its baseline would be e's again
            with_baseline = not args.no_baseline and shape.client == "replay" and shape.name != "g"
            if shape.style not in floors:
                floors[shape.style] = Floor(bench, shape.style)
            baseline_repeat = 1 if args.baseline_once else repeat
            results.append(
                run_shape(bench, shape, repeat, with_baseline, floors[shape.style], baseline_repeat)
            )
        startup = startup_cpu(1 if args.smoke else 5)
        cold = cold_start(bench) if args.cold_start else None
    finally:
        bench.close()
        shutil.rmtree(workdir, ignore_errors=True)
    text = report(results, floors, delay, repeat, startup, cold)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    print(f"machine: {machine}\n\n{text}")
    if args.write:
        args.write.write_text(_results_page(text, machine))
    return 0


def _results_page(table: str, machine: str) -> str:
    notes_path = ROOT / "bench" / "NOTES.md"
    notes = notes_path.read_text() if notes_path.exists() else ""
    return (
        "# Benchmark results\n\n"
        f"Machine: {machine}. Command: `.venv/bin/python -m bench.run {' '.join(sys.argv[1:])}`.\n\n"
        f"{table}\n\n{notes}"
    )


if __name__ == "__main__":
    sys.exit(main())
