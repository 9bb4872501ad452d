"""The house rule "one policy interface": outside ``mmalign/models/`` nobody reads a policy's
``.model``, ``.tokenizer`` or ``encode_prompts``; recipes use the Policy / TrainablePolicy hooks
(``train``/``eval``/``training``, ``freeze``, ``decode``, ``vocabulary``, ``check_prompts``, ...).

A policy is recognised by its variable name (``policy``, ``reference``, ``student``, ``teacher``,
``*_policy``, ...), read from the AST of every module. There are no exceptions: MMLU and export
verification score through the Policy's scoring interface like everyone else.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mmalign"
POLICY_NAME = re.compile(r"^(policy|reference|ref|ref_policy|pol|student|teacher|mm_policy|.*_policy)$")
INTERNALS = {"model", "tokenizer", "encode_prompts"}


def _owner(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def reaches(root: Path = PACKAGE) -> list[str]:
    """``file:line owner.attr`` for every read of a policy's internals outside ``models/``."""
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith(("models/", "rl/", "align/")):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in INTERNALS:
                owner = _owner(node.value)
                if owner and POLICY_NAME.match(owner):
                    found.append(f"{rel}:{node.lineno} {owner}.{node.attr}")
    return found


def test_no_caller_outside_models_reads_policy_internals():
    bad = reaches()
    assert not bad, "use the Policy hooks instead of:\n" + "\n".join(bad)


def test_the_check_sees_a_reach(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "recipes").mkdir(parents=True)
    (pkg / "models").mkdir()
    (pkg / "recipes" / "x.py").write_text("def f(policy, cfg, self):\n    policy.model.eval()\n"
                                          "    cfg.model.path\n    self.teacher.tokenizer.decode([1])\n")
    (pkg / "models" / "y.py").write_text("def g(policy):\n    return policy.model\n")
    assert reaches(pkg) == ["recipes/x.py:2 policy.model", "recipes/x.py:4 teacher.tokenizer"]
