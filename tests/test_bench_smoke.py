"""The benchmark harness, with tiny sizes: keeps `make bench` working (no figures asserted)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support import ROOT


def _smoke(*args: str) -> tuple[str, set[tuple[str, str]]]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=550,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rows = [line.split("|") for line in out.stdout.splitlines() if line.startswith("| ") and ": " in line]
    return out.stdout, {(row[1].strip()[0], row[2].strip()) for row in rows}


def test_bench_smoke_runs_every_shape_and_client_on_the_canned_endpoint() -> None:
    stdout, seen = _smoke()
    for shape in "abc":
        assert {(shape, "baseline"), (shape, "replay"), (shape, "replay-small")} <= seen
    assert {("d", "drain"), ("d", "drain-small")} <= seen
    assert "Floor (orjson decode" in stdout
    assert "Start-up CPU above a bare interpreter" in stdout


@pytest.mark.timeout(600)
def test_bench_smoke_runs_the_backlog_shapes_with_both_images_records() -> None:
    """#26's shapes (one of each kind): replay, drain and run of the same ranges, records with both images."""
    stdout, seen = _smoke("--shapes", "f,g,h,k")
    assert {("f", "baseline"), ("f", "replay"), ("f", "replay-small")} <= seen
    assert {("g", "replay"), ("g", "replay-small")} <= seen
    for shape, who in (("h", "drain"), ("k", "run")):
        assert {(shape, "replay"), (shape, who), (shape, f"{who}-small")} <= seen
    assert "images records, measured in this run" in stdout
    assert "h (drain of e's ranges): wall" in stdout and "k (run of f's ranges): wall" in stdout
    assert "g (one shard)" in stdout
