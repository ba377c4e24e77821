"""bench/replicas.py with tiny sizes: keeps docs/scaling.md's figures reproducible (none asserted)."""

from __future__ import annotations

import subprocess
import sys

from tests.support import ROOT


def test_one_and_two_replicas_drain_the_same_queue_on_the_canned_endpoint() -> None:
    command = [sys.executable, "-m", "bench.replicas", "--ranges", "3", "--records", "5", "--shards", "2"]
    out = subprocess.run(
        [*command, "--repeat", "1", "--delay-ms", "1"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    # it exits non-zero when the replicas together recovered other than every record
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in out.stdout.splitlines()]
    figures = [row for row in rows if row and row[0] == "3 ranges x 5 records on 2 shards"]
    assert [row[1] for row in figures] == ["1", "2"]
    assert all(float(row[2].replace(",", "")) > 0 for row in figures)
