"""A name of its own: `python -m build` makes the sdist and the wheel of `lambda-stream-replayer`,
and the wheel, installed into a fresh virtualenv, is what runs `replayer --version` and the demo.

The build runs on a copy of what the distribution is made from (pyproject.toml, README.md,
replayer/: what .dockerignore lets through), so nothing is written into the tree. The fresh
virtualenv holds the wheel alone; its dependencies come from this virtualenv (installed from the
same constraints.txt) through a .pth file, which adds that site-packages as a plain path: its own
.pth files, this checkout's editable install among them, are not processed there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from email.parser import Parser
from importlib import metadata
from pathlib import Path

import pytest

from replayer import DISTRIBUTION
from tests.support import ROOT
from tests.support.wheels import source_copy, venv_with

VERSION = metadata.version(DISTRIBUTION)
FILE = DISTRIBUTION.replace("-", "_")


@dataclass(frozen=True)
class Installed:
    sdist: Path
    wheel: Path
    venv: Path

    def run(self, *command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "REPLAYER_", "PYTHON"))}
        return subprocess.run(
            [str(self.venv / "bin" / command[0]), *command[1:]],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=240,
        )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    where = tmp_path_factory.mktemp("packaging")
    source = source_copy(where)
    built = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(where / "dist"), str(source)],
        capture_output=True,
        text=True,
        timeout=600,  # an isolated build environment: setuptools from the index (or pip's cache)
    )
    assert built.returncode == 0, (built.stdout + built.stderr)[-4000:]
    (sdist,) = (where / "dist").glob("*.tar.gz")
    (wheel,) = (where / "dist").glob("*.whl")
    venv = venv_with(wheel, where / "venv")
    return Installed(sdist, wheel, venv)


def test_build_makes_an_sdist_and_a_wheel_of_its_own_name(installed: Installed) -> None:
    assert installed.sdist.name == f"{FILE}-{VERSION}.tar.gz"
    assert installed.wheel.name == f"{FILE}-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = wheel.namelist()
        info = Parser().parsestr(wheel.read(f"{FILE}-{VERSION}.dist-info/METADATA").decode())
        entry_points = wheel.read(f"{FILE}-{VERSION}.dist-info/entry_points.txt").decode()
    assert info["Name"] == DISTRIBUTION and "demo" in info.get_all("Provides-Extra", [])
    assert "replayer = replayer.cli:main" in entry_points
    ours = {p.relative_to(ROOT).as_posix() for p in (ROOT / "replayer").rglob("*.py")}
    assert ours <= set(names) and "replayer/py.typed" in names
    assert not [n for n in names if n.startswith(("tests/", "bench/", "deploy/", "docs/"))]
    with tarfile.open(installed.sdist) as sdist:
        members = {m.name.split("/", 1)[1] for m in sdist.getmembers() if "/" in m.name}
    assert {"pyproject.toml", "README.md", "replayer/cli/__init__.py"} <= members


def test_the_installed_wheel_is_what_runs(installed: Installed, tmp_path: Path) -> None:
    where = installed.run(
        "python",
        "-c",
        "import replayer, sys; print(replayer.__file__); print(*sys.path, sep='\\n')",
        cwd=tmp_path,
    )
    assert where.returncode == 0, where.stderr
    module, *path = where.stdout.splitlines()
    assert Path(module).is_relative_to(installed.venv) and "site-packages" in module
    assert str(ROOT) not in path and "" in path  # the working tree is not on the path ('' is tmp_path)
    version = installed.run("replayer", "--version", cwd=tmp_path)
    assert version.returncode == 0, version.stderr
    assert version.stdout.split() == ["replayer", VERSION]


def test_the_installed_wheel_runs_the_demo(installed: Installed, tmp_path: Path) -> None:
    demo = installed.run("replayer", "demo", cwd=tmp_path)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "recovered 4 records into" in demo.stdout
    assert "Traceback" not in demo.stderr
    assert list(tmp_path.iterdir()) == []  # the demo leaves nothing where it ran
