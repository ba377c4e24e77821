"""The benchmark harness, with tiny sizes: keeps `make bench` working (no figures asserted)."""

from __future__ import annotations

import subprocess
import sys

from tests.support import ROOT


def test_bench_smoke_runs_every_client_on_the_same_data() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rows = [
        line
        for line in out.stdout.splitlines()
        if line.startswith("| throughput") or line.startswith("| memory")
    ]
    clients = {row.split("|")[2].strip() for row in rows}
    assert {"baseline", "replay", "drain"} <= clients
    assert "Lambda handler module import" in out.stdout
