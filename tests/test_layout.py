"""The folder tree is the architecture: no stage imports a later one, shared modules import no stage."""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "har_model"
ORDER = {"data": 0, "train": 1, "serve": 2}
SHARED = {"errors", "imaging", "hardware", "figures", "cards", "hub", "preprocessing", "outputs", "atomic", "paths"}


def _imports(path: Path) -> set[str]:
    """Every har_model.* module a file imports, at any depth (lazy imports inside functions count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("har_model")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("har_model"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ORDER else None


def _files():
    return sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(PKG)))
def test_no_stage_imports_a_later_one(path):
    rel = path.relative_to(PKG)
    own = rel.parts[0] if rel.parts[0] in ORDER else None
    for module in _imports(path):
        target = _stage(module)
        if target is None:
            continue
        if own is None:
            assert rel.name == "cli.py", f"shared module {rel} imports the {target} stage ({module})"
        else:
            assert ORDER[target] <= ORDER[own], f"{rel} ({own}) imports the later {target} stage ({module})"


def test_the_rule_is_checked_on_real_imports():
    # The checker itself must see lazy imports: serve/ui.py imports the serving inference lazily or at the top.
    assert any(_stage(m) == "serve" for m in _imports(PKG / "serve" / "ui.py"))
    assert any(_stage(m) == "data" for m in _imports(PKG / "train" / "run.py"))


ROOT = PKG.parent
CODE = sorted([*_files(), ROOT / "app.py", ROOT / "train.py", *(ROOT / "benchmarks").glob("*.py")])


def _private_uses(path: Path) -> list[str]:
    """`from har_model.x import _name` and `alias._name` where alias was imported from har_model."""
    tree = ast.parse(path.read_text(), str(path))
    aliases, found = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("har_model"):
            for a in node.names:
                if a.name.startswith("_") and not a.name.startswith("__"):
                    found.append(f"from {node.module} import {a.name}")
                aliases.add(a.asname or a.name)
        elif isinstance(node, ast.Import):
            aliases |= {(a.asname or a.name).split(".")[0] for a in node.names if a.name.startswith("har_model")}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            found.append(f"{node.value.id}.{node.attr} (line {node.lineno})")
    return found


@pytest.mark.parametrize("path", CODE, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_private_cross_module_calls(path):
    assert _private_uses(path) == [], f"{path.relative_to(ROOT)} uses another module's private names"


def test_private_use_checker_sees_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from har_model.serve import video as v\nfrom har_model.data.scan import _rel\nv._env_float('X', 1)\n")
    assert len(_private_uses(bad)) == 2
