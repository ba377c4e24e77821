"""Offline schema checks of Kubernetes objects: the npm `kubernetes-models` packages, run with node.

`kubernetes-models` carries the Kubernetes API's schemas, `@kubernetes-models/keda` KEDA's CRDs
and `@kubernetes-models/prometheus-operator` the operator's, compiled into validators. They are
installed with the machine's npm into `.cache/kubernetes-models` (once; a file lock keeps parallel
workers from installing twice). These schemas check types, required fields and enumerations; like
the API server without strict field validation, they let unknown fields through.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from tests.support import ROOT

__all__ = ["PACKAGES", "install", "missing_tools", "validate"]

PACKAGES = {
    "kubernetes-models": "5.1.0",
    "@kubernetes-models/keda": "2.0.0",
    "@kubernetes-models/prometheus-operator": "6.0.0",
}
CACHE = ROOT / ".cache" / "kubernetes-models"

# apiVersion group -> the package folder whose <version>/index.js exports the kinds.
_SCRIPT = r"""
const groups = {
  "": "kubernetes-models",
  "apps": "kubernetes-models/apps",
  "keda.sh": "@kubernetes-models/keda/keda.sh",
  "monitoring.coreos.com": "@kubernetes-models/prometheus-operator/monitoring.coreos.com",
};
const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const results = [];
for (const doc of JSON.parse(Buffer.concat(chunks).toString())) {
  const [group, version] = doc.apiVersion.includes("/") ? doc.apiVersion.split("/") : ["", doc.apiVersion];
  const where = { kind: doc.kind, name: doc.metadata?.name ?? "" };
  if (!(group in groups)) { results.push({ ...where, error: `no schemas for ${doc.apiVersion}` }); continue; }
  let module;
  try { module = await import(`${groups[group]}/${version}`); }
  catch (e) { results.push({ ...where, error: `no schemas for ${doc.apiVersion}` }); continue; }
  const Model = module[doc.kind];
  if (typeof Model !== "function") { results.push({ ...where, error: `no kind ${doc.kind} in ${doc.apiVersion}` }); continue; }
  try { new Model(doc).validate(); results.push({ ...where, error: null }); }
  catch (e) { results.push({ ...where, error: e.message }); }
}
process.stdout.write(JSON.stringify(results));
"""


def missing_tools() -> str | None:
    """Why the validators cannot run here (no node or npm on PATH), or None when they can."""
    absent = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    return f"{' and '.join(absent)} not on PATH: the schema checks need Node.js and npm" if absent else None


def _installed(root: Path) -> bool:
    for name, version in PACKAGES.items():
        try:
            manifest = json.loads((root / "node_modules" / name / "package.json").read_text())
        except (OSError, ValueError):
            return False
        if manifest.get("version") != version:
            return False
    return True


def install(root: Path = CACHE) -> Path:
    """The folder holding the packages and the validating script, installing them if needed."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _installed(root):
            command = ["npm", "install", "--prefix", str(root), "--no-audit", "--no-fund", "--loglevel=error"]
            packages = [f"{name}@{version}" for name, version in PACKAGES.items()]
            done = subprocess.run(
                [*command, *packages], stdin=subprocess.DEVNULL, capture_output=True, timeout=300
            )
            if done.returncode != 0:
                output = (done.stdout + done.stderr).decode(errors="replace")[-4000:]
                raise RuntimeError(f"npm install {' '.join(packages)} failed ({done.returncode}):\n{output}")
            if not _installed(root):
                raise RuntimeError(f"npm install left no usable kubernetes-models in {root}")
        # beside node_modules, so that node resolves the packages from the script's own folder
        (root / "validate.mjs").write_text(_SCRIPT)
    return root


def validate(documents: list[dict[str, Any]], root: Path = CACHE) -> list[dict[str, Any]]:
    """One result per document, in order: its kind, name and the schema's complaint (None when valid)."""
    done = subprocess.run(
        ["node", str(install(root) / "validate.mjs")],
        input=json.dumps(documents),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the validating script failed ({done.returncode}):\n{done.stderr[-4000:]}")
    results: list[dict[str, Any]] = json.loads(done.stdout)
    return results
