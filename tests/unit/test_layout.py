"""The house rules of the layout: which package may import what (design notes, "Two central
abstractions"): objectives are numpy / scipy only, solvers know nothing of Spark or the engines,
engines know nothing of solvers or losses, and pyspark is imported lazily where it is needed."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "sparkopt"
STDLIB = set(sys.stdlib_module_names)

# sparkopt modules every layer may use: plain data and rules, numpy-only
SHARED = {"sparkopt.blocks", "sparkopt.errors", "sparkopt.rules"}

RULES = {
    # package: (third-party top-level modules allowed, sparkopt prefixes allowed)
    "objectives": ({"numpy", "scipy"}, SHARED | {"sparkopt.objectives"}),
    "solvers": ({"numpy", "scipy"}, SHARED | {"sparkopt.solvers", "sparkopt.objectives"}),
    # cryptography: the resident channel's AES-GCM frames (engine/wire.py); threadpoolctl: the
    # tasks' BLAS threads (engine/threads.py)
    "engine": ({"numpy", "scipy", "pyarrow", "pyspark", "py4j", "cryptography", "threadpoolctl"},
               SHARED | {"sparkopt.engine"}),
    # driver-side numerics over the objective and engine interfaces: no Spark, no ml layer (of the
    # engine package only its numpy-only statistics and fold rules: a view samples as engines do)
    "tuning": ({"numpy", "scipy"}, SHARED | {"sparkopt.tuning", "sparkopt.fit", "sparkopt.least_squares",
                                            "sparkopt.linear_objective", "sparkopt.objectives",
                                            "sparkopt.solvers", "sparkopt.engine.stats", "sparkopt.engine.fold"}),
}


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(absolute module name, line, at module level) of every import in the file."""
    tree = ast.parse(path.read_text(), str(path))
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module.removesuffix(".__init__")
    top_level = {id(node) for node in tree.body}
    for node in tree.body:       # imports under a module-level `if` / `try` are module level too
        if isinstance(node, (ast.If, ast.Try)):
            top_level |= {id(child) for child in ast.walk(node)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno, id(node) in top_level) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module
            out.append((name, node.lineno, id(node) in top_level))
    return out


def _violations(layer: str) -> list[str]:
    third_party, internal = RULES[layer]
    found = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for name, line, module_level in _imports(path):
            top = name.split(".")[0]
            where = f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}"
            if top == "sparkopt":
                if not any(name == p or name.startswith(p + ".") for p in internal):
                    found.append(where)
            elif top == "__future__" or top in STDLIB:
                continue
            elif top not in third_party:
                found.append(where)
            elif top in ("pyspark", "py4j") and module_level:
                found.append(where + " at module level (import it inside the function that needs it)")
    return found


@pytest.mark.parametrize("layer", sorted(RULES))
def test_layer_imports_only_what_it_may(layer):
    assert _violations(layer) == []


def test_the_rule_checker_sees_a_violation(tmp_path, monkeypatch):
    """The checker itself must catch a forbidden import (else the test above proves nothing)."""
    fake = tmp_path / "sparkopt"
    (fake / "solvers").mkdir(parents=True)
    (fake / "solvers" / "bad.py").write_text("import numpy\nfrom ..engine import fold\nimport pyspark\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    assert [v.split(" imports ")[1] for v in _violations("solvers")] == ["sparkopt.engine", "pyspark"]


@pytest.mark.parametrize("package", ["sparkopt.objectives", "sparkopt.solvers", "sparkopt.engine",
                                     "sparkopt.fit", "sparkopt.linear_objective"])
def test_importing_the_numerical_core_does_not_start_pyspark(package):
    code = f"import sys, {package}; assert 'pyspark' not in sys.modules, 'pyspark imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
