"""The benchmark harness, with tiny sizes: keeps `make bench` working (no figures asserted)."""

from __future__ import annotations

import subprocess
import sys

from tests.support import ROOT


def test_bench_smoke_runs_every_shape_and_client_on_the_canned_endpoint() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rows = [line.split("|") for line in out.stdout.splitlines() if line.startswith("| ") and ": " in line]
    seen = {(row[1].strip()[0], row[2].strip()) for row in rows}
    for shape in "abc":
        assert {(shape, "baseline"), (shape, "replay"), (shape, "replay-small")} <= seen
    assert {("d", "drain"), ("d", "drain-small")} <= seen
    assert "Floor (orjson decode" in out.stdout
    assert "Start-up CPU above a bare interpreter" in out.stdout
