"""A Lambda cold start, with the zip as `make package` builds it: init + the first invocation.

`measure` builds the zip for this interpreter (deploy/package.py), unpacks it, and runs this
file in a fresh interpreter that sees the zip's contents and the standard library only
(``-S -E``: no site-packages, no PYTHON* variables), the way Lambda's runtime does: import the
handler module (init), then invoke it once with an SQS event holding one invocation record.

    python bench/cold_start.py SITE_DIR EVENT_JSON...   # the child's side: prints one JSON line
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


class _Context:
    aws_request_id = "bench-cold-start"
    function_name = "replayer"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:replayer"
    memory_limit_in_mb = 1024

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child(site: str, *event_paths: str) -> None:
    """In the fresh interpreter: time the handler's import, then its first invocation (cold), then
    each further event's (warm: the same process, as Lambda reuses an environment)."""
    sys.path.insert(0, site)
    t0, c0 = time.perf_counter(), _cpu()
    from replayer.lambda_handler import handler  # Lambda's init

    t1, c1 = time.perf_counter(), _cpu()
    answer = handler(json.loads(Path(event_paths[0]).read_text()), _Context())
    t2, c2 = time.perf_counter(), _cpu()
    warm = []
    for path in event_paths[1:]:
        w0, wc0 = time.perf_counter(), _cpu()
        warm_answer = handler(json.loads(Path(path).read_text()), _Context())
        warm.append({"s": time.perf_counter() - w0, "cpu_s": _cpu() - wc0, "answer": warm_answer})
    leaked = sorted(m for m in ("typer", "rich", "click", "pygments") if m in sys.modules)
    from replayer.lambda_handler import reset

    reset()  # closes the clients: Lambda would freeze the process instead
    print(
        json.dumps(
            {
                "init_s": t1 - t0,
                "init_cpu_s": c1 - c0,
                "first_s": t2 - t1,
                "first_cpu_s": c2 - c1,
                "answer": answer,
                "warm": warm,
                "cli_modules": leaked,
            }
        )
    )


def sqs_event(invocation_records: list[str], first_id: int = 1) -> dict[str, Any]:
    """An SQS event as Lambda's event source sends it, one message per invocation record."""
    return {
        "Records": [
            {
                "messageId": f"bench-{first_id + i}",
                "receiptHandle": f"bench-{first_id + i}:1",
                "body": body,
                "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1764115200000"},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:replayer-failures",
                "awsRegion": "us-east-1",
            }
            for i, body in enumerate(invocation_records)
        ]
    }


def measure(
    endpoint: str,
    invocation_record: str,
    workdir: Path,
    *,
    batches: list[list[str]] | None = None,
    extra_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Build, unpack and cold-start the zip against `endpoint`; the figures (seconds, MiB, MB).

    `batches`: the events' messages instead (each a list of invocation records): the first is the
    cold invocation, the others warm ones in the same process (`warm` in the figures).
    """
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    zip_path = workdir / "replayer-lambda.zip"
    site = workdir / "lambda-site"
    if not site.exists():  # built and unpacked once per work folder
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "deploy" / "package.py"),
                "--python-version",
                python,
                "--platform",
                f"manylinux2014_{platform.machine()}",
                "--output",
                str(zip_path),
            ],
            check=True,
            capture_output=True,
        )
        with zipfile.ZipFile(zip_path) as z:
            z.extractall(site)
    event_paths = []
    first_id = 1
    for n, batch in enumerate(batches or [[invocation_record]]):
        event_paths.append(workdir / f"event-{n}.json")
        event_paths[-1].write_text(json.dumps(sqs_event(batch, first_id)))
        first_id += len(batch)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_LAMBDA_FUNCTION_NAME": "replayer",
        "REPLAYER_TO": "s3://bench/cold-start",
        "REPLAYER_ALLOW_STREAMS": "*",
        "REPLAYER_LOG_LEVEL": "warning",
        **(extra_env or {}),
    }
    out_path, err_path = workdir / "cold-out.txt", workdir / "cold-err.txt"
    with (
        out_path.open("wb") as out_file,
        err_path.open("wb") as err_file,
    ):  # files: wait4 cannot block on a pipe
        proc = subprocess.Popen(
            [sys.executable, "-S", "-E", __file__, str(site), *map(str, event_paths)],
            env=env,
            stdout=out_file,
            stderr=err_file,
        )
        _, status, usage = os.wait4(proc.pid, 0)
    out, err = out_path.read_text(), err_path.read_text()
    if os.waitstatus_to_exitcode(status) != 0 or not out.strip():
        raise SystemExit(f"cold start failed:\n{out[-2000:]}\n{err[-3000:]}")
    figures: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    answers = [figures["answer"], *(w["answer"] for w in figures["warm"])]
    if any(a != {"batchItemFailures": []} for a in answers) or figures["cli_modules"]:
        raise SystemExit(f"cold start did not settle its messages cleanly: {figures}")
    figures["zip_mib"] = zip_path.stat().st_size / 2**20
    figures["rss_mb"] = usage.ru_maxrss / 1024
    return figures


if __name__ == "__main__":
    child(sys.argv[1], *sys.argv[2:])
