"""kinesis-local (kinesis-mock compiled to JavaScript), installed and started by the test suite.

An independent Kinesis implementation beside moto: 56-digit sequence numbers, closed
shards that answer with `ChildShards` and no `NextShardIterator`. The npm package is
installed with the machine's npm into `.cache/kinesis-local` (once; a file lock keeps
parallel workers from installing twice) and run with the machine's Node.js on free
loopback ports.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tests.support import ROOT
from tests.support.net import free_port

__all__ = ["PACKAGE", "VERSION", "KinesisLocal", "install", "missing_tools", "running"]

PACKAGE = "kinesis-local"
VERSION = "0.6.2"
CACHE = ROOT / ".cache" / "kinesis-local"
_STARTUP_SECONDS = 60.0


def missing_tools() -> str | None:
    """Why kinesis-local cannot run here (no node or npm on PATH), or None when it can."""
    absent = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    return f"{' and '.join(absent)} not on PATH: kinesis-local needs Node.js and npm" if absent else None


def _installed(root: Path) -> Path | None:
    package = root / "node_modules" / PACKAGE
    try:
        manifest = json.loads((package / "package.json").read_text())
    except (OSError, ValueError):
        return None
    return package if manifest.get("version") == VERSION and (package / "main.js").is_file() else None


def install(root: Path = CACHE) -> Path:
    """The installed package folder (holding main.js and its server.json), installing it if needed."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        package = _installed(root)
        if package is None:
            command = ["npm", "install", "--prefix", str(root), "--no-audit", "--no-fund", "--loglevel=error"]
            done = subprocess.run(
                [*command, f"{PACKAGE}@{VERSION}"], stdin=subprocess.DEVNULL, capture_output=True, timeout=300
            )
            if done.returncode != 0:
                output = (done.stdout + done.stderr).decode(errors="replace")[-4000:]
                raise RuntimeError(f"npm install {PACKAGE}@{VERSION} failed ({done.returncode}):\n{output}")
            package = _installed(root)
            if package is None:
                raise RuntimeError(f"npm install of {PACKAGE}@{VERSION} left no usable package in {root}")
        return package


def _answers(url: str) -> bool:
    """True once the server answers HTTP (any status: unsigned requests are refused with 400)."""
    request = urllib.request.Request(
        url, data=b"{}", method="POST", headers={"X-Amz-Target": "Kinesis_20131202.ListStreams"}
    )
    try:
        with urllib.request.urlopen(request, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


class KinesisLocal:
    """One running kinesis-local process; `url` is its plain-HTTP endpoint."""

    def __init__(self, package: Path) -> None:
        port, tls_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{port}"
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the process; closed in stop()
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", "/tmp"),
            "KINESIS_MOCK_PLAIN_PORT": str(port),
            "KINESIS_MOCK_TLS_PORT": str(tls_port),
            "LOG_LEVEL": "WARN",
            # stream changes settle at once instead of after the default 500 ms
            **{f"{op}_DURATION": "10ms" for op in ("CREATE_STREAM", "DELETE_STREAM", "SPLIT_SHARD")},
        }
        # cwd: main.js looks for its server.json (the TLS certificate) in the working directory
        self._process = subprocess.Popen(
            ["node", "main.js"],
            cwd=package,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + _STARTUP_SECONDS
        while not _answers(self.url):
            if self._process.poll() is not None or time.monotonic() > deadline:
                output = self.output()
                self.stop()
                raise RuntimeError(f"kinesis-local did not start on {self.url}:\n{output}")
            time.sleep(0.1)

    def output(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-4000:]

    def stop(self) -> None:
        if self._process.poll() is None:
            # it keeps nothing on disk, and on SIGTERM it waits out idle keep-alive connections
            self._process.kill()
            self._process.wait()
        with contextlib.suppress(OSError):
            self._log.close()


@contextlib.contextmanager
def running() -> Iterator[KinesisLocal]:
    """Install (if needed) and start kinesis-local; stop it on exit."""
    server = KinesisLocal(install())
    try:
        yield server
    finally:
        server.stop()
