"""Imports flow one way, `ops <- models <- research <- experiments`, and papers stay apart.

A module may import its own layer and the layers below it. Inside `research/`, a paper package
may import `research.datasets` and `research.training` (the shared packages) but no other
paper's package, and the shared packages import no paper. Imports are read with `ast`, so
imports inside functions count too.
"""

import ast
import os

import pytest

from tests.conftest import REPO_ROOT

LAYERS = ("ops", "models", "research", "experiments")
SHARED_RESEARCH = ("datasets", "training")


def _imported_modules(tree: ast.AST, module: str) -> list[tuple[int, str]]:
    """(line, absolute dotted name) of every import in `tree`, relative imports resolved."""
    package = module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            # `from research import bifeat` imports the package research.bifeat.
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def _rule_broken(importer: str, imported: str) -> str | None:
    """Why `importer` (a dotted module) may not import `imported`, or None when it may."""
    src, dst = importer.split("."), imported.split(".")
    if dst[0] not in LAYERS:
        return None  # third-party or standard library
    if LAYERS.index(dst[0]) > LAYERS.index(src[0]):
        return f"{src[0]} may not import the layer above it ({dst[0]})"
    if src[0] == dst[0] == "research" and len(src) > 2 and len(dst) > 1:
        src_pkg, dst_pkg = src[1], dst[1]
        if src_pkg != dst_pkg and dst_pkg not in SHARED_RESEARCH:
            if src_pkg in SHARED_RESEARCH:
                return f"the shared research.{src_pkg} may not import a paper ({dst_pkg})"
            return f"paper {src_pkg} may not import another paper ({dst_pkg})"
    return None


def layering_violations(root: str) -> list[str]:
    """Every import under `root`/{ops,models,research,experiments} that breaks the layering."""
    problems = []
    for layer in LAYERS:
        for folder, _, files in os.walk(os.path.join(root, layer)):
            for name in sorted(files):
                if not name.endswith(".py"):
                    continue
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, root)
                module = rel[: -len(".py")].replace(os.sep, ".").removesuffix(".__init__")
                if name == "__init__.py":
                    module += ".__init__"  # so relative imports resolve inside the package
                with open(path) as f:
                    tree = ast.parse(f.read(), filename=path)
                for line, imported in _imported_modules(tree, module):
                    why = _rule_broken(module, imported)
                    if why:
                        problems.append(f"{rel}:{line}: imports {imported}: {why}")
    return problems


def test_the_codebase_follows_the_layering():
    problems = layering_violations(REPO_ROOT)
    assert not problems, "imports against the layering:\n" + "\n".join(problems)


def _write(root, rel, text):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.mark.parametrize(
    "rel, source, expected",
    [
        ("research/bifeat/train.py", "from experiments.app import run\n", "layer above"),
        ("models/gnn.py", "def f():\n    import research.training.loop\n", "layer above"),
        ("ops/nearest.py", "from models import kge\n", "layer above"),
        ("research/smmix/steps.py", "from research.ankge import evaluate\n", "another paper"),
        ("research/smmix/steps.py", "from research import ankge\n", "another paper"),
        ("research/training/loop.py", "import research.bifeat.train\n", "shared research"),
        ("research/smmix/steps.py", "from ..ankge import evaluate\n", "another paper"),
    ],
)
def test_an_import_against_the_layering_is_reported(tmp_path, rel, source, expected):
    _write(tmp_path, rel, source)
    (problem,) = layering_violations(str(tmp_path))
    assert problem.startswith(rel) and expected in problem


def test_allowed_imports_are_not_reported(tmp_path):
    _write(tmp_path, "ops/a.py", "import jax\nfrom ops import b\n")
    _write(tmp_path, "models/m.py", "from ops import quantize\n")
    _write(
        tmp_path,
        "research/smmix/steps.py",
        "from research.training import loop\nfrom research.datasets import images\n"
        "from . import mixing\nfrom models import vit\n",
    )
    _write(tmp_path, "research/training/loop.py", "from research.datasets import batching\n")
    _write(tmp_path, "experiments/smmix.py", "from research.smmix import train\n")
    assert layering_violations(str(tmp_path)) == []
