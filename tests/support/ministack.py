"""Ministack, started by the test suite: a Lambda API that really runs Python functions from a zip.

What ministack needs (read from its source, ministack 1.4.21; see the notes at the end):
- no Docker: with ``LAMBDA_EXECUTOR=local`` (the default) a Python function runs in a warm
  worker subprocess started with ministack's own interpreter (``sys.executable``), its zip
  extracted under ``TMPDIR``. So the handler imports whatever that interpreter has (boto3
  here) and the function's ``Runtime`` only has to start with ``python``.
- ``python -m ministack`` serves every service on ``GATEWAY_PORT`` (default 4566), bound to
  ``BIND_HOST`` (default 0.0.0.0: we bind loopback only), and writes its pid file to
  ``$TMPDIR/ministack-<port>.pid``.
- the worker's environment is ministack's own plus the function's ``Environment.Variables``;
  ``AWS_ENDPOINT_URL`` defaults to ministack itself (a function-level value wins) and
  ``AWS_ACCESS_KEY_ID`` becomes the function's account (000000000000 unless the caller's
  access key is a 12-digit number).
- a function error terminates the worker (the next invocation is a cold start), so a
  handler keeps its state outside the process; one function's invocations run one at a
  time (the worker holds a lock); the 6 MB payload limit is not enforced.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.support import TESTS
from tests.support.aws import REGION
from tests.support.net import free_port

__all__ = ["Ministack", "RepairFunction", "lambda_endpoint", "ministack", "repair"]

LAMBDAS = TESTS / "lambdas"
_ROLE = "arn:aws:iam::000000000000:role/repair"


@dataclass
class Ministack:
    """A running ministack: its endpoint, and plain boto3 clients for preparing and checking state."""

    endpoint: str
    process: subprocess.Popen[bytes]
    log: Path

    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def deploy(self, name: str, source: Path, handler: str, env: dict[str, str], *, timeout: int = 30) -> str:
        """Create a Python function from the files of `source` (a directory); its ARN."""
        lam = self.client("lambda")
        arn: str = lam.create_function(
            FunctionName=name,
            Runtime="python3.11",
            Role=_ROLE,
            Handler=handler,
            Code={"ZipFile": _zip(source)},
            Timeout=timeout,
            Environment={"Variables": env},
        )["FunctionArn"]
        self.wait_active(name)
        return arn

    def wait_active(self, name: str) -> None:
        lam = self.client("lambda")
        deadline = time.monotonic() + 30
        while lam.get_function_configuration(FunctionName=name).get("State") != "Active":
            if time.monotonic() > deadline:
                raise TimeoutError(f"function {name} never became Active")
            time.sleep(0.05)


def _zip(source: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(source.rglob("*.py")):
            z.write(path, path.relative_to(source).as_posix())
    return buf.getvalue()


def start_ministack(workdir: Path, *, python: str | None = None) -> Ministack:
    """Start ministack on a free loopback port and wait until it answers; raise with its log if not.

    `python` is the interpreter to run it with (default: this one); its Lambda workers run with
    the same interpreter, so one that lacks replayer proves a deployed zip is self-contained.
    """
    last_error = ""
    for _ in range(3):  # another process may take the port between probing and binding
        port = free_port()
        log = workdir / f"ministack-{port}.log"
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", str(workdir)),
            "TMPDIR": str(workdir),
            "GATEWAY_PORT": str(port),
            "BIND_HOST": "127.0.0.1",
            "LOG_LEVEL": "WARNING",
            "LAMBDA_EXECUTOR": "local",
            "LAMBDA_STATE_TRANSITION_SECONDS": "0.05",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        with log.open("wb") as out:
            process = subprocess.Popen(
                [python or sys.executable, "-m", "ministack"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=workdir,
                start_new_session=True,  # its own process group: teardown also ends its workers
            )
        endpoint = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{endpoint}/_ministack/health", timeout=2) as answer:
                    if answer.status == 200:
                        return Ministack(endpoint, process, log)
            except OSError:
                time.sleep(0.1)
        stop_ministack(process)
        last_error = log.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"ministack did not start:\n{last_error}")


def stop_ministack(process: subprocess.Popen[bytes]) -> None:
    """End the ministack we started and its Lambda workers (its own process group).

    Workers that outlive it read end-of-file on their stdin and exit by themselves.
    """
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.fixture(scope="session")
def ministack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ministack]:
    """One ministack for the session, on a free loopback port."""
    running = start_ministack(tmp_path_factory.mktemp("ministack"))
    yield running
    stop_ministack(running.process)


@pytest.fixture
def lambda_endpoint(ministack: Ministack, aws_env: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Replayer's Lambda calls go to ministack; everything else stays on moto."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", ministack.endpoint)
    return ministack.endpoint


class RepairFunction:
    """The test repair function (tests/lambdas/repair) deployed in ministack, and what it received."""

    def __init__(self, ms: Ministack, *, timeout: int = 30, **env: str) -> None:
        self.ms = ms
        self.name = f"repair-{uuid.uuid4().hex[:10]}"
        self.bucket = self.name
        ms.client("s3").create_bucket(Bucket=self.bucket)
        self.arn = ms.deploy(
            self.name, LAMBDAS / "repair", "handler.handler", self._env(env), timeout=timeout
        )

    def _env(self, env: dict[str, str]) -> dict[str, str]:
        return {"OUT_BUCKET": self.bucket, **env}

    def configure(self, **env: str) -> None:
        """Replace the function's behaviour (its environment); the next invocation uses it."""
        self.ms.client("lambda").update_function_configuration(
            FunctionName=self.name, Environment={"Variables": self._env(env)}
        )
        self.ms.wait_active(self.name)

    def calls(self) -> list[list[dict[str, Any]]]:
        """The records of every invocation so far, in invocation order (failed invocations included)."""
        s3 = self.ms.client("s3")
        keys = sorted(
            o["Key"]
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix="calls/")
            for o in page.get("Contents", [])
        )
        return [json.loads(s3.get_object(Bucket=self.bucket, Key=k)["Body"].read())["Records"] for k in keys]

    def _invocations(self) -> list[dict[str, Any]]:
        """What each invocation wrote: its whole event, and `_at`, when it started (the function's clock)."""
        s3 = self.ms.client("s3")
        keys = sorted(
            o["Key"]
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix="calls/")
            for o in page.get("Contents", [])
        )
        return [json.loads(s3.get_object(Bucket=self.bucket, Key=k)["Body"].read()) for k in keys]

    def call_times(self) -> list[float]:
        """When each invocation started (epoch seconds, the function's own clock), in invocation order."""
        return [float(call["_at"]) for call in self._invocations()]

    def events(self) -> list[dict[str, Any]]:
        """Every invocation's whole event, in invocation order (Kafka events key records by topic-partition)."""
        return [{k: v for k, v in call.items() if k != "_at"} for call in self._invocations()]

    def received(self) -> list[dict[str, Any]]:
        return [r for call in self.calls() for r in call]


@pytest.fixture
def repair(ministack: Ministack, lambda_endpoint: str) -> RepairFunction:
    """A fresh repair function that succeeds; `repair.configure(...)` changes how it behaves."""
    return RepairFunction(ministack)
