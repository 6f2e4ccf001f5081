"""The folder tree is the architecture: no stage imports a later one, train and serve are siblings that meet only in
the model folder package, shared modules import no stage, and no two modules import each other (even indirectly)."""

import ast
import re
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "har_model"
ORDER = {"data": 0, "train": 1, "serve": 2}
SIBLINGS = {"train", "serve"}  # neither imports the other: the model folder (har_model/model_folder/) is their contract


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
            raise AssertionError(f"shared module {rel} imports the {target} stage ({module})")
        else:
            assert ORDER[target] <= ORDER[own], f"{rel} ({own}) imports the later {target} stage ({module})"


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(PKG)))
def test_train_and_serve_never_import_each_other(path):
    own = path.relative_to(PKG).parts[0]
    if own in SIBLINGS:
        other = (SIBLINGS - {own}).pop()
        assert not [m for m in _imports(path) if _stage(m) == other], f"{path.relative_to(PKG)} imports the {other} stage"


def test_the_model_folder_package_imports_no_stage():
    folder = sorted((PKG / "model_folder").glob("*.py"))
    assert {p.stem for p in folder} >= {"__init__", "files", "onnx"}
    for path in folder:
        assert not [m for m in _imports(path) if _stage(m)], f"{path.relative_to(PKG)} imports a stage"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    return ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)


def _import_graph() -> dict[str, set[str]]:
    """module -> the har_model modules it imports (``from package import module`` is an edge to the module)."""
    modules = {_module_name(p): p for p in _files()}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for module in _imports(path):
            while module and module not in modules:  # `from a.b import name`: a.b.name when that is a module
                module = module.rpartition(".")[0]
            if module and module != name:
                targets.add(module)
        graph[name] = targets
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_between_modules():
    assert _cycles(_import_graph()) == []


def test_the_cycle_checker_sees_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    graph = _import_graph()
    assert "har_model.model_folder.files" in graph["har_model.serve.inference"]  # `from pkg.mod import x` resolves
    assert "har_model.train.soup" in graph["har_model.train.run"]  # `from pkg import mod` resolves


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(PKG)))
def test_our_modules_are_never_optional(path):
    """`try: from har_model... except ImportError` would hide a broken layout (a stage left out of a Space)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Try) and any(_catches_import_error(h) for h in node.handlers):
            ours = [m for stmt in node.body for m in _imports_in(stmt) if m.startswith("har_model")]
            assert not ours, f"{path.relative_to(PKG)} line {node.lineno}: {ours[0]} imported under except ImportError"


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError") for n in names)


def _imports_in(node: ast.AST) -> list[str]:
    found = []
    for n in ast.walk(node):
        if isinstance(n, ast.Import):
            found += [a.name for a in n.names]
        elif isinstance(n, ast.ImportFrom) and n.module:
            found.append(n.module)
    return found


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


@pytest.mark.parametrize("package", sorted(p.parent for p in PKG.rglob("__init__.py") if "__pycache__" not in p.parts),
                         ids=lambda p: str(p.relative_to(PKG.parent)))
def test_package_docstrings_and_the_readme_name_every_module(package):
    """Each package's docstring names each of its modules (with its job); the README's layout names them too."""
    doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text())) or ""
    readme = (ROOT / "README.md").read_text().split("## Project layout", 1)[1]
    for module in sorted(p.stem for p in package.glob("*.py") if p.stem != "__init__"):
        assert re.search(rf"\b{module}\b", doc), f"{package.name}/__init__.py does not name {module}"
        assert re.search(rf"\b{module}\b", readme), f"README.md's layout does not name {package.name}/{module}"
