"""Every package the code imports is declared in pyproject.toml, where the code that imports it runs.

A package that only arrives as another one's dependency can vanish with that one's next release;
declaring it says we rely on it. The package itself must import what `dependencies` names; the
demo may add the `demo` extra; the tests may add the `test` extra.
"""

from __future__ import annotations

import ast
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support import ROOT, TESTS

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
PACKAGE = ROOT / "replayer"


def declared(*extras: str) -> set[str]:
    requirements = PROJECT["dependencies"] + [r for e in extras for r in PROJECT["optional-dependencies"][e]]
    return {canonicalize_name(Requirement(r).name) for r in requirements}


def imported_top_level(paths: list[Path]) -> set[str]:
    """Top-level names of every absolute import in these files (at any depth), stdlib left out."""
    names: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"__future__", "replayer", "tests", "bench"}


def distributions(modules: set[str]) -> dict[str, set[str]]:
    """The installed distributions providing each import name (one of the same name when not installed)."""
    providers = metadata.packages_distributions()
    return {m: {canonicalize_name(d) for d in providers.get(m, [m])} for m in sorted(modules)}


def undeclared(paths: list[Path], allowed: set[str]) -> dict[str, set[str]]:
    return {m: dists for m, dists in distributions(imported_top_level(paths)).items() if not dists & allowed}


def test_the_package_declares_what_it_imports() -> None:
    paths = [p for p in PACKAGE.rglob("*.py") if p.name != "demo.py"]
    assert undeclared(paths, declared()) == {}


def test_the_demo_declares_what_it_imports() -> None:
    assert undeclared([PACKAGE / "demo.py"], declared("demo")) == {}


def test_the_tests_declare_what_they_import() -> None:
    # tests/lambdas/ is code that runs inside Lambda functions, on what their runtime provides.
    paths = [p for p in TESTS.rglob("*.py") if "lambdas" not in p.relative_to(TESTS).parts]
    assert undeclared(paths, declared("test")) == {}


def test_an_undeclared_import_is_found() -> None:
    """The check itself: aiohttp, imported but left out of the allowed set, is reported."""
    assert "aiohttp" in undeclared(list(PACKAGE.rglob("*.py")), declared() - {"aiohttp"})
