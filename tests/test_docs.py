"""The documentation runs: the site builds strictly, and every ```sh block is executed as written.

Pages: README.md and docs/**/*.md. Each page gets a fresh world on the emulator that
`replayer demo --serve` started (the emulator reset, then `replayer.demo.build_world`: the table
`orders` with its stream, the bucket `my-archive`, the queues `stream-failures` and
`stream-failures-quarantine`, and `failure.json` in the page's own directory). The page's ```sh
blocks then run in order in that directory, each in one `bash -e -o pipefail`, with the `export`
lines `replayer demo --serve` printed as their environment and this virtualenv's `replayer` first
on PATH, and nothing else of AWS or replayer set (no REPLAYER_ALLOW_STREAMS: deny by default, as
for a user). A block sees what the blocks above it did, as a reader following the page would.

A block naming `lambda:NAME` gets a function NAME in ministack (the suite's repair function, which
records what it receives; `AWS_ENDPOINT_URL_LAMBDA` points at ministack, everything else stays on
the emulator). HTML comments right above a block, one directive each, say more:

    <!-- docs-test: cwd: repository -->       run it in the repository (make targets), with
                                               LAMBDA_ZIP in the page's directory (nothing is
                                               left in the tree)
    <!-- docs-test: before: COMMANDS -->      hidden set-up, run first in the same shell
    <!-- docs-test: instead: OLD => NEW -->   run NEW where the block says OLD (`make test` would
                                               run this suite again)
    <!-- docs-test: exit: N -->               the status the block must end with (default 0)

```console blocks are the commands no test here can run: they need a Docker engine, the SAM CLI
with an AWS account, or a Kubernetes cluster, and may name only those (checked below).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import boto3
import pytest

from replayer.demo import FAILURE_RECORD, build_world
from tests.support import ROOT
from tests.support.ministack import LAMBDAS, Ministack

BIN = Path(sys.executable).parent
PAGES = sorted(
    [ROOT / "README.md"]
    + [p for p in (ROOT / "docs").rglob("*.md") if not any(part.startswith(".") for part in p.parts)]
)
# Pages named in mkdocs.yml's nav before their authors add them (the lead merges them in).
PAGES_TO_COME = {"performance.md"}
# What a ```console block may run: what no test here has.
INFRASTRUCTURE = re.compile(r"^(?:docker|sam|kubectl)\b|\b(?:docker|sam|kubectl) |^make image\b")
# An outer make's settings (under `make test`) and the Makefile's own variables: not a user's shell.
MAKE_SETTINGS = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "PLATFORM", "PYTHON", "LAMBDA_ZIP", "VENV", "IMAGE")
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w-]*)\s*$")
DIRECTIVE = re.compile(r"^\s*<!-- docs-test: (?P<key>[\w ]+?): (?P<value>.*?) -->\s*$")


@dataclass
class Block:
    """A fenced block of a page: its language, its text (dedented), where it starts, its directives."""

    page: Path
    line: int
    lang: str
    text: str
    directives: list[tuple[str, str]] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    def directive(self, key: str) -> list[str]:
        return [value for k, value in self.directives if k == key]


def blocks(page: Path) -> list[Block]:
    """Every fenced block of the page, with the docs-test directives in the lines right above it."""
    lines = page.read_text().splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent = opening["indent"]
        end = next(j for j in range(i + 1, len(lines)) if lines[j].rstrip() == f"{indent}```")
        body = [line.removeprefix(indent) for line in lines[i + 1 : end]]
        directives: list[tuple[str, str]] = []
        above = i - 1
        while above >= 0 and (match := DIRECTIVE.match(lines[above])):
            directives.insert(0, (match["key"], match["value"]))
            above -= 1
        found.append(Block(page, i + 1, opening["lang"], "\n".join(body) + "\n", directives))
        i = end + 1
    return found


def shell_blocks(page: Path) -> list[Block]:
    return [b for b in blocks(page) if b.lang == "sh"]


def user_environment(**more: str) -> dict[str, str]:
    """A user's shell: this environment without AWS, replayer or make settings, this venv first."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "REPLAYER_")) and k not in MAKE_SETTINGS
    }
    env |= {"PATH": f"{BIN}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}", "NO_COLOR": "1", "COLUMNS": "100"}
    return env | more


# ---- the site


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(BIN / "mkdocs"), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    missing = set(re.findall(r"A reference to '([^']+)' is included in the 'nav'", done.stderr))
    assert missing <= PAGES_TO_COME, (
        f"mkdocs.yml's nav names pages that do not exist: {missing - PAGES_TO_COME}"
    )
    pages = {p.relative_to(ROOT / "docs").as_posix() for p in PAGES if p.is_relative_to(ROOT / "docs")}
    for page in pages:
        assert (
            tmp_path / "site" / page.removesuffix(".md").removesuffix("index") / "index.html"
        ).exists() or (page == "index.md" and (tmp_path / "site" / "index.html").exists()), page


def test_a_broken_link_fails_the_strict_build(tmp_path: Path) -> None:
    """Not a rubber stamp: a page linking to a page that does not exist fails the build."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# x\n\n[gone](gone.md) and [out](../nothing/here.json)\n")
    config = (ROOT / "mkdocs.yml").read_text().split("\nnav:\n", 1)[0]
    config = config.replace("docs/.hooks/", f"{ROOT}/docs/.hooks/")
    (tmp_path / "mkdocs.yml").write_text(config)
    done = subprocess.run(
        [str(BIN / "mkdocs"), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=tmp_path,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode != 0
    assert "gone.md" in done.stderr and "../nothing/here.json" in done.stderr


def test_the_readme_is_a_landing_page() -> None:
    """#22.9: a newcomer's page, not the manual (the manual is docs/)."""
    text = (ROOT / "README.md").read_text()
    before_details = text.split("\n## Architecture\n", 1)[0]
    assert len(text.splitlines()) <= 200
    assert len(text.split()) <= 1500
    assert len(before_details.split()) <= 1100
    for heading in ("## Quick start", "## Three ways to run it", "## Architecture", "## Read on"):
        assert f"\n{heading}\n" in text, heading


def test_the_readme_links_to_pages_that_exist() -> None:
    text = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#\s]+)", text)
    assert targets and [t for t in targets if not t.startswith("http") and not (ROOT / t).exists()] == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_examples_are_sh_blocks_and_console_blocks_need_infrastructure(page: Path) -> None:
    """Shell examples are ```sh (run below); ```console holds only what needs Docker, SAM or a cluster."""
    for block in blocks(page):
        assert block.lang not in ("bash", "shell", "zsh", "shell-session"), f"{block.where}: use ```sh"
        if block.lang != "console":
            continue
        commands = [
            line
            for line in block.text.splitlines()
            if line.strip() and not line.lstrip().startswith(("#", "--")) and not line.startswith(" ")
        ]
        assert commands, block.where
        for line in commands:
            assert INFRASTRUCTURE.search(line), (
                f"{block.where}: {line!r} can run here: put it in a ```sh block"
            )


def test_every_directive_is_one_the_harness_knows() -> None:
    for page in PAGES:
        for line_number, line in enumerate(page.read_text().splitlines(), 1):
            if "docs-test" in line:
                match = DIRECTIVE.match(line)
                assert match and match["key"] in ("cwd", "before", "instead", "exit"), f"{page}:{line_number}"
                value = match["value"]
                assert match["key"] != "cwd" or value == "repository", f"{page}:{line_number}"
                assert match["key"] != "instead" or "=>" in value, f"{page}:{line_number}"
                assert match["key"] != "exit" or value.isdigit(), f"{page}:{line_number}"


# ---- the examples


@dataclass
class Served:
    """`replayer demo --serve`, running: the endpoint and the export lines it printed."""

    process: subprocess.Popen[str]
    directory: Path
    exports: dict[str, str]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The docs' world as a user starts it; stopped with Ctrl-C (SIGINT) at the end."""
    directory = tmp_path_factory.mktemp("served")
    log = directory.parent / f"{directory.name}.log"
    with open(log, "w") as stderr:
        process = subprocess.Popen(
            [str(BIN / "replayer"), "demo", "--serve"],
            cwd=directory,
            env=user_environment(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    exports = read_exports(process.stdout)
    try:
        assert "END_SEQUENCE" in exports, log.read_text()[-4000:]
        assert (directory / FAILURE_RECORD).exists()
        yield Served(process, directory, exports)
    finally:
        process.send_signal(signal.SIGINT)
        status = process.wait(timeout=60)
    assert status == 0, log.read_text()[-4000:]
    assert not (directory / FAILURE_RECORD).exists()  # Ctrl-C takes it away with the world


def read_exports(stdout: IO[str] | None) -> dict[str, str]:
    """The `export NAME=VALUE` lines, up to the last one (END_SEQUENCE), or to the end if it fails."""
    exports: dict[str, str] = {}
    assert stdout is not None
    for line in stdout:
        if line.startswith("export "):
            name, value = line.removeprefix("export ").strip().split("=", 1)
            exports[name] = shlex.split(value)[0]
        if "END_SEQUENCE" in exports:
            break
    return exports


def test_demo_serve_prints_the_world_the_examples_use(served: Served) -> None:
    exports = served.exports
    assert exports["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
    assert exports["FAILURE_QUEUE"].endswith("/stream-failures")
    assert ":table/orders/stream/" in exports["STREAM_ARN"]
    record = (served.directory / FAILURE_RECORD).read_text()
    assert exports["STREAM_ARN"] in record and exports["START_SEQUENCE"] in record
    # the printed lines work in a shell: failure.json names a real range of 4 records, and the
    # failure queue holds that batch too
    shell = 'replayer replay failure.json --to s3://my-archive/check --allow-stream "$STREAM_ARN" --json'
    done = subprocess.run(
        ["bash", "-c", shell],
        cwd=served.directory,
        env=user_environment(**exports),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert json.loads(done.stdout)["totals"]["records_recovered"] == 4, done.stdout
    sqs = boto3.client(
        "sqs",
        endpoint_url=exports["AWS_ENDPOINT_URL"],
        region_name=exports["AWS_REGION"],
        aws_access_key_id="demo",
        aws_secret_access_key="demo",
    )
    attributes = sqs.get_queue_attributes(
        QueueUrl=exports["FAILURE_QUEUE"], AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "1"


def test_demo_serve_never_overwrites_a_failure_json(tmp_path: Path) -> None:
    mine = tmp_path / FAILURE_RECORD
    mine.write_text("my own\n")
    done = subprocess.run(
        [str(BIN / "replayer"), "demo", "--serve"],
        cwd=tmp_path,
        env=user_environment(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.splitlines()) == 1 and FAILURE_RECORD in done.stderr
    assert mine.read_text() == "my own\n"


def repair_functions(page_blocks: list[Block]) -> set[str]:
    return {name for block in page_blocks for name in re.findall(r"lambda:([A-Za-z0-9_-]+)", block.text)}


def deploy_repair(ms: Ministack, name: str) -> None:
    """A function `name` in ministack that records what it receives and succeeds.

    Made once per session; each page gets it back as made (a page's set-up may reconfigure it).
    """
    lam = ms.client("lambda")
    bucket = f"docs-{name}"
    try:
        lam.get_function(FunctionName=name)
    except lam.exceptions.ResourceNotFoundException:
        ms.client("s3").create_bucket(Bucket=bucket)
        ms.deploy(name, LAMBDAS / "repair", "handler.handler", {"OUT_BUCKET": bucket})
        return
    lam.update_function_configuration(FunctionName=name, Environment={"Variables": {"OUT_BUCKET": bucket}})
    ms.wait_active(name)


def reset(endpoint: str) -> None:
    """Empty the emulator (moto's own reset call): each page starts from a fresh world."""
    request = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert answer.status == 200


def script(block: Block) -> str:
    text = block.text
    for replacement in block.directive("instead"):
        old, new = (part.strip() for part in replacement.split("=>", 1))
        assert old in text, f"{block.where}: 'instead: {replacement}' but the block has no {old!r}"
        text = text.replace(old, new)
    return "\n".join([*block.directive("before"), text])


@pytest.mark.parametrize(
    "page", [p for p in PAGES if shell_blocks(p)], ids=lambda p: str(p.relative_to(ROOT))
)
def test_every_sh_block_runs_as_written(
    page: Path, served: Served, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    endpoint = served.exports["AWS_ENDPOINT_URL"]
    reset(endpoint)
    world = build_world(endpoint, tmp_path)
    env: dict[str, Any] = user_environment(**world.exports())
    assert set(world.exports()) == set(served.exports)  # the same variables a user was given
    page_blocks = shell_blocks(page)
    if functions := repair_functions(page_blocks):
        ms: Ministack = request.getfixturevalue("ministack")
        for name in sorted(functions):
            deploy_repair(ms, name)
        env["AWS_ENDPOINT_URL_LAMBDA"] = ms.endpoint
    for block in page_blocks:
        in_repository = block.directive("cwd") == ["repository"]
        done = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", script(block)],
            cwd=ROOT if in_repository else tmp_path,
            env=env | ({"LAMBDA_ZIP": str(tmp_path / "replayer-lambda.zip")} if in_repository else {}),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=600,
        )
        expected = int((block.directive("exit") or ["0"])[0])
        assert done.returncode == expected, (
            f"{block.where}: exit {done.returncode}, not {expected}\n{script(block)}\n"
            f"--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"
        )
