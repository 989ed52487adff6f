"""The package's layers point one way: ``cli``, ``viz``, ``training``, ... -> ``codec`` -> ``stages``.

A static check: every module of ``progvc_lab`` is parsed with ``ast`` (nothing is imported), and
every import it makes -- at module level or inside a function (a lazy import is still a dependency)
-- is resolved to the package module it names. The rules:

* ``progvc_lab.stages.*`` imports nothing from the codec or the tools built on it;
* ``progvc_lab.codec`` and the helpers it is built from (``checkpoint``, ``data``, ``metrics``,
  ``resources``) import nothing from the tools built on the codec;
* ``progvc_lab.bitstream`` reaches neither torch (nor numpy) nor any package module that does, so
  ``progvc-lab info`` and ``truncate`` stay light (``test_bitstream`` and ``test_cli`` also check it
  at run time).

Seen: ``import x``, ``from x import y`` (relative or absolute; ``from pkg import mod`` counts as
importing ``pkg.mod``) and ``importlib.import_module`` with a literal name. Not seen: a module name
computed at run time (e.g. the registry's trusted class paths, which are user code by design).
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "progvc_lab"
PACKAGE_DIR = Path(__file__).resolve().parents[1] / PACKAGE

# The tools built on the codec: nothing below them may import them.
TOOLS = ("cli", "viz", "training", "course", "evaluate", "rdeval", "bench")
# (layer, what it must not import): a layer is a module or a package prefix of the package.
LAYER_RULES = [
    ("stages", ("codec", *TOOLS)),
    ("codec", TOOLS),
    ("checkpoint", ("codec", *TOOLS)),
    ("data", ("codec", *TOOLS)),
    ("metrics", ("codec", *TOOLS)),
    ("resources", ("codec", *TOOLS)),
    ("walk", ("codec", *TOOLS)),
    ("bitstream", ("codec", "stages", *TOOLS)),
]
TORCH_FREE = ("bitstream",)
HEAVY = {"torch", "torchac", "numpy", "lightning"}  # third-party roots a torch-free module must not reach

# Exemptions, each (module, imported module, reason). Empty: the code follows the rules as written.
EXEMPT: list[tuple[str, str, str]] = []


@dataclass(frozen=True)
class Import:
    target: str   # "progvc_lab.stages.entropy", or a third-party name such as "torch.nn"
    line: int
    lazy: bool    # inside a function: runs only when the function is called

    def describe(self) -> str:
        return f"line {self.line}: {self.target}" + (" (lazy)" if self.lazy else "")


def package_modules(root: Path = PACKAGE_DIR) -> dict[str, Path]:
    """Dotted name -> file, for every module of the package (a package is its ``__init__.py``)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = (PACKAGE, *path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _resolve_relative(module: str, is_package: bool, level: int, name: str | None) -> str:
    """``from ..x import y`` inside ``module`` -> the absolute name of ``x``."""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


class _ImportVisitor(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, known: set[str]):
        self.module, self.is_package, self.known = module, is_package, known
        self.depth = 0
        self.found: list[Import] = []

    def _add(self, target: str, node: ast.AST):
        self.found.append(Import(target, node.lineno, self.depth > 0))

    def _function(self, node):
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_Import(self, node: ast.Import):
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom):
        base = (_resolve_relative(self.module, self.is_package, node.level, node.module) if node.level
                else node.module or "")
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            self._add(sub if sub in self.known else base, node)

    def visit_Call(self, node: ast.Call):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        args = node.args
        if name == "import_module" and args and isinstance(args[0], ast.Constant) and isinstance(args[0].value, str):
            target = args[0].value
            if target.startswith("."):
                package = args[1].value if len(args) > 1 and isinstance(args[1], ast.Constant) else self.module
                level = len(target) - len(target.lstrip("."))
                target = _resolve_relative(package, True, level, target.lstrip(".") or None)
            self._add(target, node)
        self.generic_visit(node)


def imports_of(source: str, module: str, is_package: bool = False, known: set[str] | None = None) -> list[Import]:
    """Every import in ``source`` (the text of ``module``), resolved to absolute dotted names."""
    visitor = _ImportVisitor(module, is_package, known if known is not None else set(package_modules()))
    visitor.visit(ast.parse(source))
    return visitor.found


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def layer_violations(module: str, imports: list[Import], banned: tuple[str, ...]) -> list[str]:
    """The imports of ``module`` that reach into a banned part of the package (minus ``EXEMPT``)."""
    exempt = {(m, t) for m, t, _ in EXEMPT}
    bad = []
    for imp in imports:
        hit = next((b for b in banned if _within(imp.target, f"{PACKAGE}.{b}")), None)
        if hit and (module, imp.target) not in exempt:
            bad.append(f"{module} imports {PACKAGE}.{hit}: {imp.describe()}")
    return bad


def _parents(name: str) -> list[str]:
    """Importing a.b.c runs a/__init__ and a/b/__init__ first."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def heavy_path(start: str, graph: dict[str, list[Import]]) -> list[str] | None:
    """The chain of imports by which importing ``start`` reaches a ``HEAVY`` package, or None.

    ``graph`` maps each package module to its imports. Every import of a reached module counts, lazy
    ones too; a parent package reached only because a submodule is imported contributes its
    module-level imports (its functions, e.g. a lazy ``__getattr__``, do not run)."""
    todo: list[tuple[str, bool, list[str]]] = [(start, True, [start])]
    for parent in _parents(start):
        todo.append((parent, False, [start, f"{parent} (parent package)"]))
    seen = set()
    while todo:
        module, all_imports, chain = todo.pop(0)
        if (module, all_imports) in seen:
            continue
        seen.add((module, all_imports))
        for imp in graph.get(module, []):
            if imp.lazy and not all_imports:
                continue
            step = chain + [imp.target]
            if imp.target.split(".")[0] in HEAVY:
                return step
            if imp.target in graph:
                todo.append((imp.target, True, step))
                todo.extend((p, False, step + [f"{p} (parent package)"]) for p in _parents(imp.target))
    return None


@pytest.fixture(scope="module")
def graph() -> dict[str, list[Import]]:
    modules = package_modules()
    return {name: imports_of(path.read_text(), name, path.name == "__init__.py", set(modules))
            for name, path in modules.items()}


def test_the_package_is_parsed(graph):
    assert {"progvc_lab.codec", "progvc_lab.bitstream", "progvc_lab.stages.entropy", "progvc_lab.cli"} <= set(graph)
    # `from . import codec` in progvc_lab/__init__.py is an import of the module progvc_lab.codec
    assert Import("progvc_lab.codec", 13, True) in graph["progvc_lab"]


@pytest.mark.parametrize("layer,banned", LAYER_RULES, ids=[layer for layer, _ in LAYER_RULES])
def test_layers_point_one_way(graph, layer, banned):
    members = [m for m in graph if _within(m, f"{PACKAGE}.{layer}")]
    assert members, f"no module {PACKAGE}.{layer}"
    bad = [v for m in members for v in layer_violations(m, graph[m], banned)]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("module", TORCH_FREE)
def test_torch_free_modules_stay_torch_free(graph, module):
    chain = heavy_path(f"{PACKAGE}.{module}", graph)
    assert chain is None, " -> ".join(chain)


def test_exemptions_name_real_imports(graph):
    for module, target, reason in EXEMPT:
        assert reason and any(i.target == target for i in graph[module]), (module, target)


# --- the check itself fails on a violation ---------------------------------------------------------

KNOWN = {"progvc_lab", "progvc_lab.codec", "progvc_lab.stages", "progvc_lab.stages.fake",
         "progvc_lab.bitstream", "progvc_lab.metrics", "progvc_lab.viz"}

STAGE_WITH_LAZY_CODEC_IMPORT = '''
"""A stage that reaches up into the codec inside a function."""
import torch
from .registry import register


def build():
    from ..codec import Codec
    return Codec
'''


def test_a_lazy_upward_import_is_a_violation():
    imports = imports_of(STAGE_WITH_LAZY_CODEC_IMPORT, "progvc_lab.stages.fake", known=KNOWN)
    assert Import("progvc_lab.codec", 8, True) in imports
    bad = layer_violations("progvc_lab.stages.fake", imports, ("codec", *TOOLS))
    assert bad == ["progvc_lab.stages.fake imports progvc_lab.codec: line 8: progvc_lab.codec (lazy)"]


@pytest.mark.parametrize("source", [
    "from progvc_lab import viz\n",
    "import progvc_lab.viz.figures as f\n",
    "import importlib\nm = importlib.import_module('progvc_lab.viz')\n",
    "import importlib\nm = importlib.import_module('..viz', 'progvc_lab.codec')\n",
])
def test_every_spelling_of_an_import_is_seen(source):
    imports = imports_of(source, "progvc_lab.codec", known=KNOWN)
    assert layer_violations("progvc_lab.codec", imports, TOOLS), imports


def test_a_torch_import_through_another_module_is_caught():
    graph = {
        "progvc_lab": imports_of("def __getattr__(n):\n    from . import codec\n", "progvc_lab", True, KNOWN),
        "progvc_lab.bitstream": imports_of("def f():\n    from . import metrics\n", "progvc_lab.bitstream",
                                           known=KNOWN),
        "progvc_lab.metrics": imports_of("import torch.nn.functional as F\n", "progvc_lab.metrics", known=KNOWN),
        "progvc_lab.codec": imports_of("import torch\n", "progvc_lab.codec", known=KNOWN),
    }
    assert heavy_path("progvc_lab.bitstream", graph) == ["progvc_lab.bitstream", "progvc_lab.metrics",
                                                         "torch.nn.functional"]
    # the parent package's lazy __getattr__ does not run when progvc_lab.bitstream is imported...
    graph["progvc_lab.bitstream"] = []
    assert heavy_path("progvc_lab.bitstream", graph) is None
    # ...but a module-level import in it would
    graph["progvc_lab"] = imports_of("from . import codec\n", "progvc_lab", True, KNOWN)
    assert heavy_path("progvc_lab.bitstream", graph)[-1] == "torch"


# --- one place knows the repository's folders (progvc_lab.resources) -------------------------------
PATHS_MODULE = f"{PACKAGE}.resources"


def folder_climbs(source: str) -> list[int]:
    """Lines where a path is computed from ``__file__`` above the module's own folder: ``.parents[i]``,
    two or more ``.parent``, ``os.path.dirname`` twice, or a ``".."`` next to it. (``Path(__file__).parent``,
    the module's own folder, is allowed: package data beside the module.)"""
    tree = ast.parse(source)
    parent_of = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    lines = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Name) and node.id == "__file__"):
            continue
        climbs, cur = 0, node
        while cur in parent_of:
            up = parent_of[cur]
            if isinstance(up, ast.Attribute) and up.attr == "parent":
                climbs += 1
            elif isinstance(up, ast.Attribute) and up.attr == "parents":
                climbs += 2  # parents[0] is the own folder; any use of .parents is flagged
            elif isinstance(up, ast.Call) and getattr(up.func, "attr", getattr(up.func, "id", "")) == "dirname":
                climbs += 1
            elif isinstance(up, (ast.BinOp, ast.Call)) and any(
                    isinstance(n, ast.Constant) and isinstance(n.value, str) and ".." in n.value
                    for n in ast.walk(up)):
                climbs += 2
            elif not isinstance(up, (ast.Attribute, ast.Call, ast.Subscript, ast.BinOp, ast.keyword)):
                break
            cur = up
        if climbs >= 2:
            lines.append(node.lineno)
    return lines


def test_only_the_paths_module_climbs_from_its_file():
    bad = {name: folder_climbs(path.read_text()) for name, path in package_modules().items() if name != PATHS_MODULE}
    bad = {name: lines for name, lines in bad.items() if lines}
    assert not bad, f"compute repository folders in {PATHS_MODULE} and import them: {bad}"
    assert folder_climbs((PACKAGE_DIR / "resources.py").read_text()), "the paths module itself should be seen"


@pytest.mark.parametrize("source,flagged", [
    ("from pathlib import Path\nROOT = Path(__file__).resolve().parents[1]\n", True),
    ("from pathlib import Path\nROOT = Path(__file__).resolve().parent.parent / 'data'\n", True),
    ("import os\nROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))\n", True),
    ("import os\nROOT = os.path.join(os.path.dirname(__file__), '..', 'shared')\n", True),
    ("from pathlib import Path\nHERE = Path(__file__).resolve().parent / 'checkpoints'\n", False),
    ("NAME = __file__\n", False),
])
def test_the_folder_check_sees_a_climb(source, flagged):
    assert bool(folder_climbs(source)) is flagged, source
