"""The house rule "arrows point down": no import cycle among mmalign's subpackages, lazy
(function-level) imports and registry strings ("mmalign.x.y:Name") included.

The graph is read from the AST of every module, so an import inside a function counts as much as
one at the top. Nodes are the subpackages (``models``, ``rl``, ...) and top-level modules
(``errors``); an edge A -> B means some module of A imports some module of B.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mmalign"
_MODULE_STRING = re.compile(r"^([A-Za-z_]\w*(?:\.\w+)+)(?::\w+)?$")


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _node(module: str, top: str) -> str | None:
    """The subpackage (or top-level module) that ``module`` belongs to; None outside the package
    or for the root package itself."""
    parts = module.split(".")
    if parts[0] != top or len(parts) < 2:
        return None
    return parts[1]


def _from_module(node: ast.ImportFrom, package: str) -> str:
    """The absolute module a ``from ... import`` statement in ``package`` reads from."""
    if not node.level:
        return node.module or ""
    base = package.split(".")[: len(package.split(".")) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph(root: Path = PACKAGE) -> dict[str, dict[str, list[str]]]:
    """{subpackage: {imported subpackage: ["file:line", ...]}} for the package at ``root``."""
    top = root.name
    modules = {_module_name(p, root) for p in root.rglob("*.py")}
    graph: dict[str, dict[str, list[str]]] = {}
    for path in sorted(root.rglob("*.py")):
        name = _module_name(path, root)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        source = _node(name, top)
        if source is None:
            continue
        graph.setdefault(source, {})
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                module = _from_module(node, package)
                # `from mmalign import models` names a subpackage; `from mmalign.x import y` names x
                targets = [module] + [f"{module}.{alias.name}" for alias in node.names
                                      if f"{module}.{alias.name}" in modules]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                match = _MODULE_STRING.match(node.value)
                if match and match.group(1).split(".")[0] == top and match.group(1) in modules:
                    targets = [match.group(1)]
            for target in targets:
                dest = _node(target, top)
                if dest is not None and dest != source:
                    where = f"{path.relative_to(root.parent)}:{node.lineno}"
                    graph[source].setdefault(dest, []).append(where)
    return graph


def find_cycle(graph: dict[str, dict[str, list[str]]]) -> list[str] | None:
    """One cycle of ``graph`` as [a, b, ..., a], or None when it is acyclic."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def _describe(graph, cycle: list[str]) -> str:
    return " -> ".join(cycle) + "; via " + "; ".join(
        f"{a}->{b} at {graph[a][b][0]}" for a, b in zip(cycle, cycle[1:]))


def test_mmalign_subpackages_form_no_import_cycle():
    graph = import_graph()
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle among mmalign subpackages: {_describe(graph, cycle)}"


def test_the_graph_sees_lazy_imports():
    graph = import_graph()
    # rewards/clip_score.py imports models.media only inside a method
    assert "models" in graph["rewards"]
    assert any(":" in where for where in graph["rewards"]["models"])
    assert {"models", "rl", "align", "training"} <= set(graph["recipes"])


def test_components_never_import_recipes_training_or_the_cli():
    """cli -> recipes -> training -> components: arrows point down."""
    graph = import_graph()
    components = {"models", "rewards", "align", "rl", "decoding", "evaluation", "export", "edge",
                  "games", "data", "config", "utils", "errors"}
    for name in components & set(graph):
        bad = {"recipes", "training", "cli"} & set(graph[name])
        assert not bad, f"{name} imports {sorted(bad)}: {[graph[name][b][0] for b in sorted(bad)]}"
    bad = {"recipes", "cli"} & set(graph["training"])
    assert not bad, f"training imports {sorted(bad)}: {[graph['training'][b][0] for b in sorted(bad)]}"
    assert not graph.get("games"), f"games depends on {sorted(graph['games'])}"


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.mark.parametrize("how", ["top", "lazy", "relative", "registry"])
def test_the_check_fails_on_a_cycle(tmp_path, how):
    """A toy package whose a -> b -> a cycle hides in each way an import can be written."""
    back = {
        "top": "from pkg.a import x\n",
        "lazy": "def f():\n    from pkg.a.mod import x\n    return x\n",
        "relative": "from ..a import mod\n",
        "registry": 'TARGETS = {"x": "pkg.a.mod:x"}\n',
    }[how]
    root = _write(tmp_path / "pkg", {
        "__init__.py": "", "a/__init__.py": "x = 1\n", "a/mod.py": "from pkg.b.mod import y\nx = y\n",
        "b/__init__.py": "", "b/mod.py": back + "y = 2\n", "c/__init__.py": "from pkg.a import x\n"})
    graph = import_graph(root)
    assert find_cycle(graph) in (["a", "b", "a"], ["b", "a", "b"])
    assert set(graph["c"]) == {"a"}


def test_the_check_passes_an_acyclic_toy_package(tmp_path):
    root = _write(tmp_path / "pkg", {
        "__init__.py": "", "a/__init__.py": "from pkg.b import y\n", "b/__init__.py": "from pkg import c\ny = 1\n",
        "c/__init__.py": "", "d.py": "import pkg.a\n"})
    graph = import_graph(root)
    assert find_cycle(graph) is None
    assert graph == {"a": {"b": ["pkg/a/__init__.py:1"]}, "b": {"c": ["pkg/b/__init__.py:1"]}, "c": {},
                     "d": {"a": ["pkg/d.py:1"]}}


# "align/ imports nothing but torch/numpy/scipy, so it can be tested exactly": besides those three
# (and the standard library), a module of align/ may import only align/ itself and mmalign.errors.
ALIGN_MAY_IMPORT = {"torch", "numpy", "scipy", "__future__"} | set(sys.stdlib_module_names)


def impure_align_imports(root: Path = PACKAGE) -> list[str]:
    """``file:line module`` for every import in ``<root>/align`` outside what align/ may import
    (lazy and relative imports included)."""
    top = root.name
    allowed_own = {f"{top}.align", f"{top}.errors"}
    found = []
    for path in sorted((root / "align").rglob("*.py")):
        name = _module_name(path, root)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                module = _from_module(node, package)
                # `from pkg import utils` imports pkg.utils
                targets = [f"{module}.{a.name}" for a in node.names] if module == top else [module]
            else:
                continue
            for target in targets:
                first = target.split(".")[0]
                own = any(target == m or target.startswith(m + ".") for m in allowed_own)
                if not own and (first == top or first not in ALIGN_MAY_IMPORT):
                    found.append(f"{path.relative_to(root.parent).as_posix()}:{node.lineno} {target}")
    return found


def test_align_imports_nothing_but_torch_numpy_scipy_and_errors():
    bad = impure_align_imports()
    assert not bad, "align/ is pure math; move what needs these elsewhere:\n" + "\n".join(bad)


def test_the_purity_check_sees_io_lazy_and_relative_imports(tmp_path):
    root = _write(tmp_path / "pkg", {
        "__init__.py": "", "errors.py": "", "utils/__init__.py": "", "utils/atomic.py": "",
        "align/__init__.py": "from pkg.align.math import f\nfrom pkg import errors\n",
        "align/math.py": ("import math\nimport numpy as np\nfrom scipy.special import expit\nimport torch\n"
                          "from pkg.errors import E\nfrom . import other\n"
                          "import safetensors\n"
                          "def f():\n    from pkg.utils.atomic import write\n    return write\n"),
        "align/other.py": "from ..utils import atomic\nfrom pkg import utils\n"})
    assert impure_align_imports(root) == ["pkg/align/math.py:7 safetensors", "pkg/align/math.py:9 pkg.utils.atomic",
                                          "pkg/align/other.py:1 pkg.utils", "pkg/align/other.py:2 pkg.utils"]
