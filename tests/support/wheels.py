"""The package as a user installs it: its sources copied out of the tree (setuptools writes build/
beside pyproject.toml), and a built wheel installed alone into a fresh virtualenv."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from tests.support import ROOT


def source_copy(where: Path) -> Path:
    """What a wheel is built from (pyproject.toml, README.md, replayer/), copied under `where`."""
    source = where / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "replayer", source / "replayer", ignore=shutil.ignore_patterns("__pycache__"))
    return source


def venv_with(wheel: Path, venv: Path) -> Path:
    """A fresh virtualenv at `venv` with `wheel` installed alone (no index, no dependencies); the
    dependencies come from the test virtualenv, installed from the same constraints.txt, through a
    .pth file. Returns the virtualenv."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            python,
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert install.returncode == 0, install.stderr
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv
