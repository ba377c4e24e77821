"""`replayer demo`, as `make demo` runs it: a real subprocess with its own emulator."""

from __future__ import annotations

import os
import subprocess
import sys


def test_demo_recovers_the_failed_batch_offline() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    out = subprocess.run(
        [sys.executable, "-m", "replayer", "demo"], capture_output=True, text=True, env=env, timeout=180
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "recovered 4 records into" in out.stdout
    assert "s3://replayer-demo-archive/failed-batches/dynamodb/" in out.stdout.replace("\n", "")
    assert out.stdout.count("seq 1") == 4
    assert "Traceback" not in out.stderr
