"""Recipes read in one sitting (CleanRL's ppo.py is the model): no function in mmalign/recipes/
is 80 lines or longer; a long loop is split into named steps."""

from __future__ import annotations

import ast
from pathlib import Path

RECIPES = Path(__file__).resolve().parents[2] / "mmalign" / "recipes"
LIMIT = 80


def function_lengths(root: Path = RECIPES) -> list[tuple[int, str]]:
    """(lines, "file:line name") of every function and method under ``root`` (nested ones too;
    a function's lines run from its ``def`` to its last statement), longest first."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found.append((node.end_lineno - node.lineno + 1, f"{path.relative_to(root)}:{node.lineno} {node.name}"))
    return sorted(found, reverse=True)


def test_the_longest_function_in_recipes_is_under_80_lines():
    lengths, where = function_lengths()[0]
    assert lengths < LIMIT, f"{where} is {lengths} lines; split it into named steps"


def test_the_align_loop_is_about_60_lines():
    lengths = dict((where.split(" ")[1], n) for n, where in function_lengths() if where.startswith("align.py:"))
    assert lengths["run_align"] <= 70


def test_the_length_check_sees_long_and_nested_functions(tmp_path):
    body = "\n".join(f"        x{i} = {i}" for i in range(LIMIT))
    (tmp_path / "r.py").write_text(f"def short():\n    return 1\n\n\nclass C:\n    def outer(self):\n"
                                   f"        def inner():\n            return 2\n{body}\n        return inner\n")
    found = function_lengths(tmp_path)
    assert found[0] == (LIMIT + 4, "r.py:6 outer")
    assert (2, "r.py:7 inner") in found and (2, "r.py:1 short") in found
