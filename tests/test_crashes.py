"""`replayer run` killed with SIGKILL at random points, restarted, again and again: nothing is lost.

The service runs as a real process (`python -m replayer run`) behind a proxy that adds a
little latency to every call, so that kills land between reading, archiving and deleting.
After every kill: no archive object is partial (S3 puts are atomic; the file sink links a
finished temporary file into place), and no message is gone whose range is not completely
archived. At the end: every range archived exactly once (one creating PUT per object),
the queue empty.

Figures for docs/reliability.md go to `.cache/reliability/crashes-*.json` (printed with -s).
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from replayer.archive.layout import MANIFEST, RECORDS
from replayer.cli import app
from tests.support import ROOT
from tests.support.aws import DynamoTable, client, keys, make_queue, queue_counts, send
from tests.support.faultproxy import Chaos, FaultProxy, record_proof
from tests.support.service import start_replayer
from tests.support.workload import Workload, build_workload, check_archive, ddb_ranges, sequence_of

SEED = int(os.environ.get("CRASH_SEED", "6"))
KILLS = int(os.environ.get("CRASH_KILLS", "12"))
VISIBILITY = 2  # seconds: what a killed process held comes back this soon


class Lives:
    """Starts `python -m replayer run` again and again; each life's JSON log in its own file."""

    def __init__(self, endpoint: str, args: list[str], logs: Path) -> None:
        self.endpoint = endpoint
        self.args = args
        self.logs = logs
        self.count = 0
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Path:
        self.count += 1
        log = self.logs / f"life-{self.count:03d}.log"
        self.process = start_replayer(
            self.endpoint,
            "run",
            "--http-port",
            "off",
            "--log-level",
            "info",
            "--allow-stream",
            "*",
            *self.args,
            log=log,
        )
        deadline = time.monotonic() + 30
        while b'"service_started"' not in log.read_bytes():
            assert self.process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the service did not start"
            time.sleep(0.02)
        return log

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        assert self.process.wait(10) == -signal.SIGKILL

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(30)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def lives_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "lives"
    path.mkdir()
    yield path


def after_calls(proxy: FaultProxy, before: int, calls: int, operation: str = "", limit: float = 5.0) -> None:
    """Wait until `calls` more AWS calls (of `operation`, if given) were answered, or `limit` seconds."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        done = proxy.forwarded[before:]
        if sum(1 for f in done if not operation or f.operation == operation) >= calls:
            return
        time.sleep(0.003)


def wait_until_empty(endpoint: str, queue: str, limit: float = 90.0) -> None:
    deadline = time.monotonic() + limit
    while queue_counts(endpoint, queue) != (0, 0):
        assert time.monotonic() < deadline, f"queue not empty: {queue_counts(endpoint, queue)}"
        time.sleep(0.2)


# ---- the S3 archive


def complete_ranges_in_s3(endpoint: str, bucket: str, work: Workload) -> int:
    """Ranges whose manifest is there; checks that no object there is partial or orphaned."""
    present = set(keys(endpoint, bucket, "archive/"))
    s3 = client("s3", endpoint)
    complete = 0
    for r in work.ranges:
        records_key, manifest_key = (f"archive/{r.folder}/{name}" for name in (RECORDS, MANIFEST))
        if records_key in present:  # atomic: all of it or nothing (gzip checks its own length and CRC)
            body = s3.get_object(Bucket=bucket, Key=records_key)["Body"].read()
            lines = gzip.decompress(body).decode().splitlines()
            assert [sequence_of(json.loads(line)) for line in lines] == r.sequences
        if manifest_key in present:
            assert records_key in present  # the manifest is written last
            json.loads(s3.get_object(Bucket=bucket, Key=manifest_key)["Body"].read())
            complete += 1
    return complete


def test_sigkill_at_random_points_loses_nothing(
    moto_endpoint: str, proxy: FaultProxy, bucket: str, lives_dir: Path
) -> None:
    work = build_workload(moto_endpoint, tables=3, streams=1, ranges_each=5, size=2)
    work.bad = []  # one range per message: a message gone means its range must be complete
    queue = make_queue(moto_endpoint, visibility=VISIBILITY)
    send(moto_endpoint, queue, *(r.record for r in work.ranges))
    # Latency on every call stretches the work, so kills land between its steps.
    proxy.chaos = Chaos(SEED, rate=1.0, kinds=["latency"], latency=(0.005, 0.06))
    args = [
        "--queue", queue, "--to", f"s3://{bucket}/archive", "--concurrency", "3", "--prefetch", "2",
        "--visibility-timeout", str(VISIBILITY), "--wait-seconds", "1", "--retry-base-seconds", "0",
    ]  # fmt: skip
    for arn in work.allow:
        args += ["--allow-stream", arn]
    rng = random.Random(SEED)
    lives = Lives(proxy.url, args, lives_dir)
    mid_work = 0
    try:
        for _ in range(KILLS):
            lives.start()
            before = len(proxy.forwarded)
            # A random point in its work: after a random number of its AWS calls were answered.
            after_calls(proxy, before, rng.randint(1, 14))
            lives.kill()
            calls = {f.operation for f in proxy.forwarded[before:]}
            remaining = sum(queue_counts(moto_endpoint, queue))
            if remaining and (
                calls & {"GetShardIterator", "GetRecords"} or any(c.startswith("PUT ") for c in calls)
            ):
                mid_work += 1
            complete = complete_ranges_in_s3(moto_endpoint, bucket, work)
            # A message is deleted only once its range is complete in the archive.
            assert remaining >= len(work.ranges) - complete
        archived_while_killing = complete_ranges_in_s3(moto_endpoint, bucket, work)
        lives.start()
        wait_until_empty(moto_endpoint, queue)
        assert lives.stop() == 0
    finally:
        lives.close()
    proxy.chaos.enabled = False
    lost = check_archive(moto_endpoint, bucket, "archive", work, proxy.created().__getitem__)
    assert lost == 0
    assert mid_work >= KILLS // 2  # most kills did interrupt work (else the test proves little)
    record_proof(
        "crashes-s3",
        {
            "seed": SEED,
            "ranges": len(work.ranges),
            "records": work.records,
            "sigkills": KILLS,
            "sigkills_mid_work": mid_work,
            "ranges_archived_before_the_last_restart": archived_while_killing,
            "ranges_archived_once": len(work.ranges),
            "partial_objects_seen": 0,
            "records_lost": lost,
        },
    )


# ---- the file sink


def test_sigkill_during_file_sink_writes_leaves_no_partial_file(
    moto_endpoint: str, proxy: FaultProxy, tmp_path: Path, lives_dir: Path
) -> None:
    table = DynamoTable(moto_endpoint)
    # Large, incompressible records: writing a range takes long enough to be interrupted.
    payload = base64.b64encode(random.Random(SEED).randbytes(150_000)).decode()
    work = Workload(ranges=ddb_ranges(table, 10, 2, payload=payload), allow=[table.stream_arn])
    queue = make_queue(moto_endpoint, visibility=VISIBILITY)
    send(moto_endpoint, queue, *(r.record for r in work.ranges))
    root = tmp_path / "archive"
    proxy.chaos = Chaos(SEED + 1, rate=1.0, kinds=["latency"], latency=(0.005, 0.03))
    args = [
        "--queue", queue, "--to", f"file:{root}", "--concurrency", "2", "--prefetch", "1",
        "--visibility-timeout", str(VISIBILITY), "--wait-seconds", "1", "--retry-base-seconds", "0",
        "--allow-stream", table.stream_arn,
    ]  # fmt: skip
    rng = random.Random(SEED + 1)
    lives = Lives(proxy.url, args, lives_dir)
    kills = max(3, KILLS // 3)
    try:
        for _ in range(kills):
            lives.start()
            # Just after a range was read: while it is being compressed and written, or soon after.
            after_calls(proxy, len(proxy.forwarded), rng.randint(1, 2), operation="GetRecords")
            time.sleep(rng.uniform(0.0, 0.05))
            lives.kill()
            check_files(root, work)
        lives.start()
        wait_until_empty(moto_endpoint, queue)
        assert lives.stop() == 0
    finally:
        lives.close()
    leftovers = check_files(root, work, final=True)
    # What a reader of the archive finds: every range once, nothing from the leftovers.
    result = CliRunner().invoke(
        app,
        # no function named repair here: a dry run's pre-flight would say so, as the run's does
        [
            "redrive",
            "--from",
            f"file:{root}",
            "--to",
            "lambda:repair",
            "--dry-run",
            "--json",
            "--no-preflight",
        ],
    )
    assert result.exit_code == 0, result.stderr
    found = json.loads(result.stdout)["ranges"]
    assert sorted(r["range"]["range_id"] for r in found) == sorted(
        json.loads((root / r.folder / MANIFEST).read_text())["range"]["range_id"] for r in work.ranges
    )
    record_proof(
        "crashes-file",
        {
            "seed": SEED + 1,
            "ranges": len(work.ranges),
            "records": work.records,
            "sigkills": kills,
            "temporary_files_left": leftovers,
            "partial_files_seen": 0,
            "records_lost": 0,
        },
    )


def check_files(root: Path, work: Workload, *, final: bool = False) -> int:
    """No partial archive file under `root`; temporary files only under their own names. How many."""
    if not root.exists():
        return 0
    expected = {root / r.folder / name: r for r in work.ranges for name in (RECORDS, MANIFEST)}
    temporary = 0
    for path in root.rglob("*"):
        if path.is_dir():
            continue
        if path.name.startswith(".tmp-") and path.name.endswith(".part"):
            temporary += 1  # a write cut short: never named as an archive file
            continue
        assert path in expected, path
        r = expected[path]
        if path.name == RECORDS:
            lines = gzip.decompress(path.read_bytes()).decode().splitlines()
            assert [sequence_of(json.loads(line)) for line in lines] == r.sequences
        else:
            assert (path.parent / RECORDS).exists()  # the manifest is written last
            assert json.loads(path.read_text())["archived"]["records"] == len(r.sequences)
    if final:
        assert {p for p in expected if p.exists()} == set(expected)
    return temporary


def test_a_write_killed_half_way_leaves_only_a_temporary_file(tmp_path: Path) -> None:
    """The file sink's own guarantee, made certain: kill the writer while the bytes are going out."""
    target = tmp_path / "range" / RECORDS
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from replayer.archive.store import write_once; "
            "write_once(Path(sys.argv[1]), b'x' * (192 * 1024 * 1024))",
            str(target),
        ],
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 30
        while not [p for p in target.parent.glob(".tmp-*.part") if p.stat().st_size > 0]:
            assert writer.poll() is None and time.monotonic() < deadline, "the write never started"
            time.sleep(0.001)
        writer.send_signal(signal.SIGKILL)
        assert writer.wait(10) == -signal.SIGKILL
    finally:
        if writer.poll() is None:
            writer.kill()
    assert not target.exists()  # nothing under the archive name
    (left,) = target.parent.glob(".tmp-*.part")
    assert left.stat().st_size < 192 * 1024 * 1024
