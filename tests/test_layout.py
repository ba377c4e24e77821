"""The house drawn from the imports: no arrows back up, no private modules used across packages.

Every module under replayer/ is parsed (ast, never imported) and each import it makes, at any
depth (inside functions and `if TYPE_CHECKING:` too), is checked against two rules:
- an underscore-named module (`replayer.readers._base`) is imported only from inside its package;
- no module imports a module of a higher layer (LAYERS below, lowest first; same layer is fine).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

from tests.support import ROOT

SRC = ROOT

# The layers, lowest first: the target layout of issue #14 as the code is now (observe sits below
# settle, whose Settler counts through the Recorder). A module belongs to the layer of the longest
# prefix naming it ("replayer" names the package's __init__ only), and may import modules of its own
# layer and the layers below.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    # What records are, and the pure rules about them (which streams, which records).
    (
        "foundation",
        (
            "replayer",
            "replayer.model",
            "replayer.errors",
            "replayer.wire",
            "replayer.allow",
            "replayer.filtering",
            "replayer.selection",
        ),
    ),
    ("plumbing", ("replayer.config", "replayer.aws", "replayer.logs")),
    ("parse", ("replayer.parse",)),
    ("reads and archive", ("replayer.readers", "replayer.mappings", "replayer.archive")),
    ("sinks", ("replayer.sinks",)),
    ("core", ("replayer.core", "replayer.plan")),  # plan: the dry run's counterpart of core
    ("observe", ("replayer.observe", "replayer.status")),  # status: what is pending, for people and /status
    ("settle", ("replayer.settle",)),
    ("sources", ("replayer.sources", "replayer.watch")),  # watch: at-risk windows are a source of ranges
    ("reconcile", ("replayer.audit", "replayer.why")),  # what Lambda says against the archive, and logs
    (
        "entry points",
        ("replayer.cli", "replayer.report", "replayer.lambda_handler", "replayer.demo", "replayer.__main__"),
    ),
]


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name
    imported: str  # dotted module name (a `from m import name` of a submodule names the submodule)
    line: int

    def __str__(self) -> str:
        return f"{self.importer}:{self.line} imports {self.imported}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((SRC / "replayer").rglob("*.py"))}


MODULES = all_modules()


def imports_of(name: str, path: Path) -> list[Import]:
    """replayer's own modules that `name` imports; `from pkg import sub` counts sub when it is a module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[Import] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against this module's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        found += [
            Import(name, t, node.lineno) for t in dict.fromkeys(targets) if t.split(".")[0] == "replayer"
        ]
    return found


def layer_of(module: str) -> int:
    best, level = -1, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            inside = module.startswith(prefix + ".") and prefix != "replayer"
            if (module == prefix or inside) and len(prefix) > best:
                best, level = len(prefix), index
    return level


def private_across_packages(imp: Import) -> bool:
    """True when `imp` names an underscore module (or one inside it) from outside that module's package."""
    parts = imp.imported.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_") and not part.startswith("__"):
            owner = ".".join(parts[:i])  # the package the private module belongs to
            return not (imp.importer == owner or imp.importer.startswith(owner + "."))
    return False


def upward(imp: Import) -> bool:
    return layer_of(imp.imported) > layer_of(imp.importer)


ALL_IMPORTS = [imp for name, path in MODULES.items() for imp in imports_of(name, path)]


def test_every_module_has_a_layer() -> None:
    assert [m for m in MODULES if layer_of(m) < 0] == [], "add these modules to LAYERS"


def test_the_rules_catch_what_they_should() -> None:
    """The checks themselves, on made-up imports (so a broken check cannot pass silently)."""
    assert private_across_packages(Import("replayer.sinks.archive", "replayer.readers._base", 1))
    assert not private_across_packages(Import("replayer.readers.kinesis", "replayer.readers._base", 1))
    assert not private_across_packages(Import("replayer.readers", "replayer.readers._base", 1))
    assert upward(Import("replayer.model", "replayer.core", 1))
    assert not upward(Import("replayer.core", "replayer.model", 1))
    assert not upward(Import("replayer.readers.kinesis", "replayer.readers", 1))
    assert layer_of("replayer.sinks.archive") == layer_of("replayer.sinks") > layer_of("replayer")
    assert layer_of("replayer.not_in_the_table") == -1


def test_imports_are_read_from_the_code() -> None:
    """Each relative and absolute form resolves to the module it names."""
    seen = {(i.importer, i.imported) for i in ALL_IMPORTS}
    assert ("replayer", "replayer.model") in seen
    assert len(ALL_IMPORTS) > 2 * len(MODULES)


def test_no_private_module_is_used_across_packages() -> None:
    broken = [str(i) for i in ALL_IMPORTS if private_across_packages(i)]
    assert broken == [], "underscore modules are private to their package:\n" + "\n".join(broken)


def test_no_module_imports_a_higher_layer() -> None:
    broken = [str(i) for i in ALL_IMPORTS if upward(i)]
    assert broken == [], "imports of a higher layer (see LAYERS):\n" + "\n".join(broken)


def test_test_modules_import_no_other_test_module() -> None:
    """Shared test helpers live in tests/support/ (fixtures in conftest.py, which is never imported)."""
    tests = ROOT / "tests"
    broken = []
    for path in sorted(tests.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                parts = name.split(".")
                if (
                    parts[0] == "tests"
                    and len(parts) > 1
                    and (parts[1] == "conftest" or parts[1].startswith("test_"))
                ):
                    broken.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {name}")
    assert broken == []


def test_the_architecture_table_names_every_module_and_package_and_nothing_else() -> None:
    """docs/architecture.md's module table (README's Architecture section is its summary)."""
    section = (ROOT / "docs" / "architecture.md").read_text().split("\n## ", 1)[0]
    named: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            named.update(re.findall(r"`([\w/.]+)`", line.split("|")[1]))
    package = SRC / "replayer"
    assert sorted(n for n in named if not (package / n).exists()) == []  # nothing stale
    described = {p.name for p in package.glob("*.py") if p.stem not in ("__init__", "__main__")}
    described |= {f"{p.name}/" for p in package.iterdir() if (p / "__init__.py").exists()}
    assert sorted(described - named) == []  # every module and package has its row
