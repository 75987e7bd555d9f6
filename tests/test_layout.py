"""The layout is the pipeline: no import cycles, and no stage reaching into another stage.

Every import in toolkit/ counts, including the lazy ones inside functions (they run too, just
later); only `if TYPE_CHECKING:` blocks are left out. See docs/architecture.md for the rooms.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "toolkit"
STAGES = {"train", "optimize", "convert", "validate", "package", "serve", "check"}
FOUNDATION = {"core", "data", "runtimes"}
# What each room may import besides itself. train owns the build step, so it reads the
# builders registry; builders is a library of model functions over core/ and data/.
ALLOWED = {
    **{stage: FOUNDATION for stage in STAGES},
    "train": FOUNDATION | {"builders"},
    "builders": {"core", "data"},
    "core": {"core", "data"},
    "data": {"core", "data"},
    "runtimes": {"core", "data", "runtimes"},
}
FACES = {"pipeline", "cli", "__init__", "__main__"}  # may import any room
MAX_LINES = 400
LONG_FILES_ALLOWED = {"package/bundle/run.py"}  # the shipped standalone bundle script


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path = PACKAGE) -> dict[str, Path]:
    return {module_name(p, root): p for p in root.rglob("*.py")}


def _type_checking_lines(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                skip.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return skip


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The toolkit modules `path` imports (a `from pkg import name` of a submodule is that
    submodule; of anything else, the package)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skip = _type_checking_lines(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "toolkit")
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != "toolkit":
                continue
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
    return {m for m in found if m in known}


def graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    mods = modules(root)
    known = set(mods)
    return {name: imports_of(path, known) - {name} for name, path in mods.items()}


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def violations(edges: dict[str, set[str]]) -> list[str]:
    bad = []
    for src, targets in sorted(edges.items()):
        src_room = room(src)
        if src_room in FACES:
            continue
        allowed = ALLOWED.get(src_room)
        if allowed is None:
            bad.append(f"{src}: room {src_room!r} is not in the layout (tests/test_layout.py)")
            continue
        for dst in sorted(targets):
            dst_room = room(dst)
            if dst_room != src_room and dst_room not in allowed:
                bad.append(f"{src} imports {dst} ({src_room} may import {sorted(allowed)})")
    return bad


def test_no_import_cycles() -> None:
    assert cycles(graph()) == []


def test_no_stage_imports_another_stage() -> None:
    assert violations(graph()) == []


def test_top_level_is_only_packages() -> None:
    files = sorted(p.name for p in PACKAGE.iterdir() if p.is_file() and p.suffix == ".py")
    assert files == ["__init__.py", "__main__.py"]
    rooms = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert rooms == STAGES | FOUNDATION | {"builders", "pipeline", "cli"}


def test_files_stay_short() -> None:
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert {k: v for k, v in long.items() if k not in LONG_FILES_ALLOWED} == {}


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / "toolkit" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "toolkit"


def test_checker_catches_a_lazy_cycle_and_a_stage_to_stage_import(tmp_path: Path) -> None:
    """The checks above can fail: a constructed tree with both faults is caught."""
    pkg = _write(
        tmp_path,
        {
            "__init__.py": "",
            "core/__init__.py": "",
            "core/a.py": "def f():\n    from toolkit.core.b import g\n",
            "core/b.py": "from toolkit.core import a\n",
            "check/__init__.py": "",
            "check/stage.py": "def run():\n    from toolkit.validate.stage import validate\n",
            "validate/__init__.py": "",
            "validate/stage.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from toolkit.check.stage import run\n",
        },
    )
    edges = graph(pkg)
    assert cycles(edges) == [["toolkit.core.a", "toolkit.core.b"]]
    assert violations(edges) == [
        "toolkit.check.stage imports toolkit.validate.stage "
        "(check may import ['core', 'data', 'runtimes'])"
    ]


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_packages_are_callable_entry_points(stage: str) -> None:
    """`toolkit.train(...)` etc. are the public API; the package itself must stay light."""
    import importlib

    module = importlib.import_module(f"toolkit.{stage}")
    assert callable(module), f"toolkit.{stage} is not callable"
