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
