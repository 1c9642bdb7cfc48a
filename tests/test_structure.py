"""The package's shape: no import cycles, small files, short functions, every module imports.

Each later feature should be "one new file and one registration"; these checks keep the
house that way (issue 12).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import refocus

PACKAGE = Path(refocus.__file__).parent
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 100


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:`` (never run)."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skipped


def _targets(node: ast.Import | ast.ImportFrom, module: str) -> list[str]:
    """The package modules one import statement loads (a name that is a submodule counts
    as that submodule; a name defined in a module counts as the module)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        assert not node.level, f"{module}: relative import (the package imports absolutely)"
        base = node.module or ""
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
    return [n for n in names if n in MODULES]


def import_graph() -> dict[str, set[str]]:
    """Every explicit import between the package's modules, wherever it stands in a file."""
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        skipped = _type_checking_nodes(tree)
        edges = graph.setdefault(module, set())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in skipped:
                edges.update(t for t in _targets(node, module) if t != module)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_graph_sees_imports_inside_functions() -> None:
    graph = import_graph()
    # refocus/__init__.py imports the Refocuser inside __getattr__ only
    assert "refocus.inference.refocuser" in graph["refocus"] | graph["refocus.predict"]
    assert len(graph) == len(MODULES) > 40


def test_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def third_party_imports() -> list[str]:
    """Every module outside refocus that a refocus module imports at its top level (the
    ones a forked child would otherwise import again, one at a time)."""
    found = set()
    for path in MODULES.values():
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                # ``from scipy import ndimage``: the names may be submodules
                found |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
    return sorted(m for m in found if m.split(".")[0] not in ("refocus", "__future__"))


@pytest.mark.skipif(sys.platform == "win32", reason="needs fork")
def test_every_module_imports_on_its_own() -> None:
    """Each module imported first in a process without refocus loaded (forked before any
    refocus import, after the third-party ones, so the check stays fast)."""
    code = (
        "import importlib, multiprocessing as mp, sys\n"
        "preload, names = sys.argv[1].split(','), sys.argv[2:]\n"
        "for dep in preload:\n"
        "    try: importlib.import_module(dep)\n"
        "    except ImportError: pass  # a name, not a module, or an optional extra\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'refocus']\n"
        "def child(name, q):\n"
        "    try: __import__(name); q.put(None)\n"
        "    except BaseException as exc: q.put(f'{type(exc).__name__}: {exc}')\n"
        "ctx = mp.get_context('fork'); q = ctx.Queue(); bad = []\n"
        "for name in names:\n"
        "    p = ctx.Process(target=child, args=(name, q)); p.start(); p.join()\n"
        "    err = q.get(timeout=60)\n"
        "    if err or p.exitcode: bad.append(f'{name}: {err}')\n"
        "print('\\n'.join(bad)); sys.exit(1 if bad else 0)\n"
    )
    import subprocess

    names = [m for m in MODULES if not m.endswith("__main__")]
    proc = subprocess.run([sys.executable, "-c", code, ",".join(third_party_imports()), *names],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]


def test_no_file_over_the_limit() -> None:
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines()))
            > MAX_FILE_LINES}
    assert not long, f"files over {MAX_FILE_LINES} lines: {long}"


def test_no_function_over_the_limit() -> None:
    long = {}
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long[f"{module}.{node.name}"] = length
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


#: Heavy modules a command that only predicts must not import at start: seconds each on two
#: cores (torchvision pulls torch's compiler stack; scipy.signal pulls scipy.stats).
START_UP_FORBIDDEN = ("torchvision", "torch._dynamo", "scipy.signal", "scipy.stats")


def test_the_command_line_starts_without_the_heavy_optional_modules() -> None:
    import subprocess

    code = ("import sys, refocus.cli, refocus.inference.refocuser, refocus.zoo\n"
            "from refocus.archs import ARCHITECTURES\n"
            "ARCHITECTURES.names()  # discovery imports every architecture module\n"
            f"print([m for m in {START_UP_FORBIDDEN!r} if m in sys.modules])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, check=True)
    assert proc.stdout.strip() == "[]"
