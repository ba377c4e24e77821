"""The container image: built by `make image` with buildah (no Docker daemon here), then run.

`make image-test` runs these (marker `image`; `make test` leaves them out): they need root and
buildah, plus mmdebstrap where the official Python image cannot be pulled (then `make image` makes
the base from Debian's packages). Nothing here installs them: `.ci/run` does on a CI machine
(`apt-get install buildah mmdebstrap`), and without buildah the image tests skip, saying why.
The image runs with `buildah run --isolation chroot` on the host's network, against the suite's
moto server. At the end every image and container the build made is removed again (the base
included), so a run leaves buildah's storage as it found it.
"""

from __future__ import annotations

import fcntl
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from replayer import DISTRIBUTION
from tests.support import ROOT
from tests.support.aws import DynamoTable, client, keys, make_queue, queue_counts, send
from tests.support.net import free_port, http_get

TAG = "localhost/replayer:test"
BIN = Path(sys.executable).parent
# One image build at a time on this machine (outside the tree: a run writes nothing there).
LOCK = Path(tempfile.gettempdir()) / "replayer-image-test.lock"


def why_not_buildah() -> str | None:
    """None where the image can be built and run here, else why not (the tests then skip)."""
    if os.geteuid() != 0:
        return "buildah --isolation chroot builds and runs the image as root only"
    if shutil.which("buildah") is None:
        return "buildah is not installed (make image-test needs it: apt-get install buildah mmdebstrap)"
    return None


@dataclass(frozen=True)
class Built:
    """The image `make image` built: its name, what make printed last, and its configuration."""

    name: str
    report: str
    config: dict[str, Any]


def size_in_mb(report: str) -> float:
    number, unit = re.search(r"size ([\d.]+) ([kKMG]B)", report).groups()  # type: ignore[union-attr]
    return float(number) * {"kB": 0.001, "KB": 0.001, "MB": 1, "GB": 1000}[unit]


def buildah_ids(kind: str) -> set[str]:
    """The ids of every image (kind "images") or working container ("containers") buildah holds."""
    untruncated = "--no-trunc" if kind == "images" else "--notruncate"
    listed = subprocess.run(
        ["buildah", kind, "--all", "--noheading", untruncated, "--quiet"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(listed.split())


def remove_new(containers: set[str], images: set[str]) -> None:
    """Remove the containers and images made since those sets were taken (newest images first)."""
    for container in buildah_ids("containers") - containers:
        subprocess.run(["buildah", "rm", container], capture_output=True, check=False)
    made = buildah_ids("images") - images
    for _ in range(len(made) + 1):  # a layer's child must go before it: repeat until none is left
        made = buildah_ids("images") - images
        if not made:
            break
        for image in made:
            subprocess.run(["buildah", "rmi", "--force", image], capture_output=True, check=False)
    assert buildah_ids("images") - images == set(), "images the build made are still there"


@pytest.fixture(scope="module")
def image(request: pytest.FixtureRequest) -> Iterator[Built]:
    why_not = why_not_buildah()
    if why_not is not None:
        pytest.skip(why_not)
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # held to the end: the clean-up removes what this run made
        containers, images = buildah_ids("containers"), buildah_ids("images")
        try:
            yield build(request)
        finally:
            remove_new(containers, images)


def build(request: pytest.FixtureRequest) -> Built:
    done = subprocess.run(
        ["make", "--no-print-directory", "image", f"IMAGE={TAG}"],
        cwd=ROOT,
        env={**os.environ, "BUILDER": "buildah"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=1100,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    reports = [line for line in done.stdout.splitlines() if line.startswith("image: ")]
    assert len(reports) == 1 and reports[0].startswith(f"image: {TAG} "), done.stdout[-2000:]
    report = reports[0]
    # one line, one size: this build's (`buildah images NAME` once put a second size on a line of its own)
    assert re.fullmatch(r"image: \S+ from \S+ by buildah, size [\d.]+ [kKMG]B, built in \d+ s", report), (
        report
    )
    # the size and build time in the run's output, past the output capturing
    terminal = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if terminal is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            terminal.write_line(f"\n{report}")
    inspected = subprocess.run(
        ["buildah", "inspect", "--type", "image", TAG], capture_output=True, text=True, check=True
    ).stdout
    return Built(TAG, report, json.loads(inspected)["OCIv1"]["config"])


def working_container(image: Built) -> str:
    return subprocess.run(
        ["buildah", "from", "--quiet", "--pull-never", image.name], capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.fixture(scope="module")
def container(image: Built) -> Iterator[str]:
    """A working container of the image; each test runs its own command in it."""
    name = working_container(image)
    yield name
    subprocess.run(["buildah", "rm", name], capture_output=True, check=False)


def in_container(container: str, command: list[str], env: dict[str, str] | None) -> list[str]:
    """The command line running command in the container, as the image's USER, on the host's network."""
    options = [f"--env={key}={value}" for key, value in (env or {}).items()]
    return [
        "buildah",
        "run",
        "--isolation",
        "chroot",
        "--network",
        "host",
        *options,
        container,
        "--",
        *command,
    ]


def run(container: str, *command: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The command in the container, to its end (the suite's moto is on the host's loopback)."""
    return subprocess.run(
        in_container(container, list(command), env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )


AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


def program(image: Built) -> str:
    """The program the image's entrypoint runs (`docker run --entrypoint` takes it, docs/running.md)."""
    entrypoint: list[str] = image.config["Entrypoint"]
    return entrypoint[0]


@pytest.mark.image
@pytest.mark.timeout(1200)  # a clean machine makes the Debian base first: minutes
def test_the_image_runs_replayer_as_its_non_root_user(image: Built, container: str) -> None:
    user = image.config["User"].split(":")[0]
    assert user not in ("", "0", "root")
    version = run(container, program(image), "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.split() == ["replayer", metadata.version(DISTRIBUTION)]
    whoami = run(container, "python", "-c", "import os; print(os.getuid(), os.getgid())")
    assert whoami.stdout.split() == [user, user], whoami.stderr
    assert image.config["Entrypoint"][1:] == ["run"]
    assert size_in_mb(image.report) < 500  # a base plus the runtime dependencies, no toolchain


@pytest.mark.image
@pytest.mark.timeout(1200)  # a clean machine makes the Debian base first: minutes
def test_the_image_drains_a_queue_into_s3(
    image: Built, container: str, table: DynamoTable, bucket: str, moto_endpoint: str
) -> None:
    table.put(5)
    records = table.stream_records()
    queue = make_queue(moto_endpoint)
    send(moto_endpoint, queue, table.invocation_record(0, 2, records), table.invocation_record(3, 4, records))
    env = {"AWS_ENDPOINT_URL": moto_endpoint, **AWS_ENV}
    done = run(
        container,
        program(image),
        "drain",
        "--queue",
        queue,
        "--to",
        f"s3://{bucket}/image",
        "--allow-stream",
        table.stream_arn,
        "--wait-seconds",
        "1",
        "--json",
        env=env,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert json.loads(done.stdout)["totals"]["records_recovered"] == 5
    assert queue_counts(moto_endpoint, queue) == (0, 0)
    s3 = client("s3", moto_endpoint)
    archived = []
    for key in keys(moto_endpoint, bucket, "image/"):
        if key.endswith("records.jsonl.gz"):
            body = gzip.decompress(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
            archived += [json.loads(line) for line in body.splitlines()]
    assert sorted(r["dynamodb"]["SequenceNumber"] for r in archived) == sorted(
        r["dynamodb"]["SequenceNumber"] for r in records
    )
    assert {r["eventSourceARN"] for r in archived} == {table.stream_arn}


@pytest.mark.image
@pytest.mark.timeout(1200)  # a clean machine makes the Debian base first: minutes
def test_the_entrypoint_serves_healthz_and_the_healthcheck_passes(
    image: Built, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    """`docker run IMAGE --queue URL --to ...` (docs/running.md): the entrypoint with the service's flags."""
    port = free_port()
    queue = make_queue(moto_endpoint)
    env = {"AWS_ENDPOINT_URL": moto_endpoint, **AWS_ENV, "REPLAYER_HTTP_HOST": "127.0.0.1"}
    service, probe = working_container(image), working_container(image)
    command = [
        *image.config["Entrypoint"],
        "--queue",
        queue,
        "--to",
        f"s3://{bucket}",
        "--http-port",
        str(port),
        "--allow-stream",  # the service refuses to start with no stream allowed
        "arn:aws:dynamodb:*:*:table/*/stream/*",
    ]
    log = tmp_path / "service.log"
    with open(log, "wb") as stderr:  # a file, not a pipe: nothing reads it while the service runs
        process = subprocess.Popen(
            in_container(service, command, env), stdin=subprocess.DEVNULL, stderr=stderr
        )
    try:
        status, body = 0, ""
        deadline = time.monotonic() + 120  # a bound on waiting, not a speed assertion
        while status != 200 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
            status, body = http_get(port, "/healthz")
        assert status == 200, log.read_text()[-4000:]
        assert body == "ok\n"
        # the image's own HEALTHCHECK command, run in the image as Docker would
        inspected = subprocess.run(
            ["buildah", "inspect", "--type", "image", image.name], capture_output=True, text=True, check=True
        ).stdout
        test = json.loads(inspected)["Docker"]["config"]["Healthcheck"]["Test"]
        assert test[0] == "CMD"
        check = run(probe, *test[1:], env={"REPLAYER_HTTP_PORT": str(port)})
        assert check.returncode == 0, check.stderr
        assert run(probe, *test[1:], env={"REPLAYER_HTTP_PORT": str(free_port())}).returncode != 0
    finally:
        # buildah run does not pass SIGTERM on (it kills its command): graceful stops are tested
        # on the installed wheel in test_deploy.py
        process.terminate()
        process.wait(timeout=60)
        subprocess.run(["buildah", "rm", service, probe], capture_output=True, check=False)


def test_hadolint_passes() -> None:
    done = subprocess.run(
        [str(BIN / "hadolint"), "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_is_not_a_rubber_stamp(tmp_path: Path) -> None:
    broken = tmp_path / "Dockerfile"
    text = (ROOT / "Dockerfile").read_text()
    broken.write_text(re.sub(r"^ENTRYPOINT .*$", "ENTRYPOINT replayer run", text, flags=re.M))
    done = subprocess.run([str(BIN / "hadolint"), "--no-color", str(broken)], capture_output=True, text=True)
    assert done.returncode != 0 and "DL3025" in done.stdout
