"""Build the Lambda deployment zip: replayer and its runtime dependencies, for one Lambda runtime.

    python deploy/package.py [--platform manylinux2014_x86_64] [--python-version 3.12] [--output ZIP]

(`make package` runs this.) The dependencies are the package's own less what only the command
line needs (the `cli` extra names those: the handler never imports the CLI), with nothing for
tests, the demo or development, resolved with the same constraints file CI tests with, and
only as binary wheels for the target platform and Python, so the build machine's own
interpreter and architecture do not matter. The zip is reproducible: the same inputs give the
same bytes (sorted entries, fixed timestamps and permissions, no console scripts, no record
of where the build ran), so an unchanged build is not redeployed. Byte-code is included when
an interpreter of the runtime's version is at hand (this one, or `pythonX.Y` on PATH):
hash-based, so it holds no timestamp and stays valid in the zip; Lambda cannot write it into
its read-only /var/task, so without it every cold start compiles every module it imports
(about 1 s of CPU). Without such an interpreter the zip holds sources only.
botocore keeps the models of the AWS services replayer calls (`SERVICES`) and drops the
other four hundred (12 of its 13 MiB zipped).

Only the standard library and pip are needed; pip reaches the package index (and its cache).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = ROOT / "deploy" / "build" / "replayer-lambda.zip"  # deploy/template.yaml's CodeUri
PLATFORMS = ("manylinux2014_x86_64", "manylinux2014_aarch64")
# The AWS services replayer's code makes clients for: botocore's models of every other one are left out
# (dynamodb: --skip-stale reads items back; kms: the manifest key; logs: `why`, found by the test).
SERVICES = (
    "cloudwatch",
    "dynamodb",
    "dynamodbstreams",
    "kafka",
    "kinesis",
    "kms",
    "lambda",
    "logs",
    "pipes",
    "s3",
    "secretsmanager",
    "sqs",
    "sts",
)
# The extra that names the command line's own dependencies: not in the zip.
CLI_EXTRA = "cli"
# The earliest time a zip entry can carry; SOURCE_DATE_EPOCH (if set) wins.
_EPOCH_1980 = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class Artefact:
    path: Path
    size: int  # bytes, zipped
    unzipped: int  # bytes
    files: int
    sha256: str

    def summary(self) -> str:
        mib = 1024 * 1024
        return (
            f"{self.path}: {self.size / mib:.1f} MiB zipped ({self.size} bytes), "
            f"{self.unzipped / mib:.1f} MiB unzipped, {self.files} files, sha256 {self.sha256}"
        )


def build(
    *,
    platform: str,
    python_version: str,
    output: Path = DEFAULT_OUTPUT,
    constraints: Path = ROOT / "constraints.txt",
    project: Path = ROOT,
    python: str = sys.executable,
) -> Artefact:
    """Build the zip at `output` (replaced only when the build succeeded); what was written."""
    with tempfile.TemporaryDirectory(prefix="replayer-package-") as tmp:
        wheels = Path(tmp, "wheels")
        site = Path(tmp, "site")
        _pip(python, "wheel", "--no-deps", "--wheel-dir", str(wheels), str(_sources(project, Path(tmp))))
        (wheel,) = wheels.glob("lambda_stream_replayer-*.whl")
        target = [
            "--platform", platform,
            "--python-version", python_version,
            "--implementation", "cp",
            "--only-binary=:all:",
            "--no-compile",
            "--no-warn-script-location",
            "--constraint", str(constraints),
        ]  # fmt: skip
        # replayer itself apart, without its dependencies; then those the Lambda runs with.
        own = Path(tmp, "own")
        _pip(python, "install", "--target", str(own), "--no-deps", *target, str(wheel))
        _pip(python, "install", "--target", str(site), *target, *lambda_requirements(wheel))
        for path in own.iterdir():
            shutil.move(path, site / path.name)
        _prune(site)
        _compile(site, python_version)
        output.parent.mkdir(parents=True, exist_ok=True)
        partial = output.with_name(output.name + ".partial")
        unzipped, files = _zip(site, partial)
        os.replace(partial, output)
    digest = hashlib.sha256(output.read_bytes()).hexdigest()
    return Artefact(output, output.stat().st_size, unzipped, files, digest)


def _sources(project: Path, into: Path) -> Path:
    """A copy of what the wheel is made from (as .dockerignore lets through), built there: setuptools
    writes build/ and *.egg-info beside pyproject.toml, and a stale build/lib would reach the wheel."""
    copy = into / "project"
    copy.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(project / name, copy / name)
    shutil.copytree(project / "replayer", copy / "replayer", ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def lambda_requirements(wheel: Path) -> list[str]:
    """The wheel's own requirements, less those its `cli` extra names (the Lambda never runs the CLI)."""
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        text = archive.read(name).decode()
    requires = [
        line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Requires-Dist:")
    ]
    extra = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")
    cli = {_name(r) for r in requires if extra.findall(r) == [CLI_EXTRA]}
    return [r for r in requires if not extra.search(r) and _name(r) not in cli]


def _name(requirement: str) -> str:
    """The distribution a requirement names, normalized (PEP 503)."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    return re.sub(r"[-_.]+", "-", match.group(1)).lower() if match else requirement


def _pip(python: str, *args: str) -> None:
    command = [python, "-m", "pip", "--disable-pip-version-check", "-q", *args]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")


def _prune(site: Path) -> None:
    """Drop what Lambda never runs and what would differ between build machines.

    Console scripts (`bin/`: their first line names the build's interpreter), byte-code,
    pip's `direct_url.json` (the build's temporary path), and botocore's models of services
    replayer never calls. RECORD files lose the same lines,
    so every installed distribution stays consistent with what is in the zip.
    """
    shutil.rmtree(site / "bin", ignore_errors=True)
    for cache in sorted(site.rglob("__pycache__"), reverse=True):
        shutil.rmtree(cache)
    for pyc in site.rglob("*.pyc"):
        pyc.unlink()
    for direct_url in site.glob("*.dist-info/direct_url.json"):
        direct_url.unlink()
    models = site / "botocore" / "data"
    for service in models.iterdir() if models.is_dir() else ():
        if service.is_dir() and service.name not in SERVICES:
            shutil.rmtree(service)
    for record in site.glob("*.dist-info/RECORD"):
        kept = []
        for line in record.read_text().splitlines():
            path = (site / line.rsplit(",", 2)[0]).resolve()
            if path.is_relative_to(site.resolve()) and path.exists():
                kept.append(line)
        record.write_text("".join(f"{line}\n" for line in kept))


def _compile(site: Path, python_version: str) -> bool:
    """Byte-code for every module, by an interpreter of the runtime's version; False when none is at hand.

    Hash-based (`unchecked-hash`: valid whatever the files' timestamps), paths recorded as
    Lambda's /var/task, a fixed hash seed: the same sources give the same bytes.
    """
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    compiler = sys.executable if here == python_version else shutil.which(f"python{python_version}")
    if compiler is None:
        return False
    # a name on PATH is not always an interpreter that runs (a pyenv shim of a version not selected)
    if compiler != sys.executable and subprocess.run([compiler, "-c", ""], capture_output=True).returncode:
        return False
    command = [compiler, "-m", "compileall", "-q", "--invalidation-mode", "unchecked-hash",
               "-s", str(site), "-p", "/var/task", str(site)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")
    return True


def _zip(site: Path, output: Path) -> tuple[int, int]:
    """Write every file under `site` into `output` in sorted order; (bytes unzipped, files)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = _EPOCH_1980
    if epoch:
        import time

        when = max(_EPOCH_1980, time.gmtime(int(epoch))[:6])
    files = [p for p in site.rglob("*") if p.is_file() and not p.is_symlink()]
    paths = sorted(files, key=lambda p: p.relative_to(site).as_posix())
    total = 0
    with zipfile.ZipFile(output, "w") as archive:
        for path in paths:
            info = zipfile.ZipInfo(path.relative_to(site).as_posix(), date_time=when)
            info.create_system = 3  # unix: the permissions below are read
            mode = 0o755 if path.stat().st_mode & 0o111 else 0o644
            info.external_attr = (stat.S_IFREG | mode) << 16
            # Already compressed (botocore's service models): stored, deflating them again gains nothing.
            info.compress_type = zipfile.ZIP_STORED if path.suffix == ".gz" else zipfile.ZIP_DEFLATED
            data = path.read_bytes()
            total += len(data)
            archive.writestr(info, data, compresslevel=6)
    return total, len(paths)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--platform",
        default=PLATFORMS[0],
        help=f"wheel platform tag of the Lambda architecture: {' or '.join(PLATFORMS)} (default: %(default)s)",
    )
    parser.add_argument(
        "--python-version", default="3.12", help="the Lambda runtime's Python (default: %(default)s)"
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="the zip (default: %(default)s)")
    parser.add_argument("--constraints", type=Path, default=ROOT / "constraints.txt")
    args = parser.parse_args(argv)
    artefact = build(
        platform=args.platform,
        python_version=args.python_version,
        output=args.output,
        constraints=args.constraints,
    )
    print(f"{artefact.summary()} (python {args.python_version}, {args.platform})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
