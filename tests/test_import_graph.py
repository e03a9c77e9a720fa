"""The import graph of the tokenguard package, read from the source with ``ast`` (nothing is imported).

Every ``import`` statement counts: at module level, under ``if TYPE_CHECKING:``
and inside functions (a deferred import still ties the two modules together).
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "tokenguard"
#: Modules that import a web framework when imported; nothing else may import them.
ADAPTERS = frozenset(
    {
        "tokenguard.starlette",
        "tokenguard.fastapi",
        "tokenguard.flask",
        "tokenguard.wsgi",
        "tokenguard.django",
        "tokenguard.rest_framework",
        "tokenguard.mcp",
        "tokenguard.fastmcp",
    }
)
#: Third-party web frameworks (and the MCP SDKs built on them).
FRAMEWORKS = frozenset({"starlette", "fastapi", "flask", "werkzeug", "django", "rest_framework", "mcp", "fastmcp"})
#: Core modules that import a framework, only inside a function and only once a
#: framework asks: ``requirement`` builds the FastAPI signature of the dependency
#: that ``TokenGuard.requires()`` returns when FastAPI first inspects it.
DEFERRED_FRAMEWORK_USERS = frozenset({"tokenguard.requirement"})


@functools.cache
def parsed(path: Path) -> ast.Module:
    """``path``'s syntax tree, parsed once per worker.

    CPython 3.11's AST conversion compares the thread's recursion depth before
    and after; a recursion limit changed meanwhile (hypothesis raises and
    restores it around its tests) makes that check fail with "SystemError: AST
    constructor recursion depth mismatch", an interpreter bug unrelated to the
    source. The parse is tried again then; a real syntax error raises at once.
    """
    source = path.read_text()
    for attempt in range(4):
        try:
            return ast.parse(source, str(path))
        except SystemError:
            if attempt == 3:
                raise
    raise AssertionError("unreachable")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported(name: str, path: Path, known: dict[str, Path]) -> Iterator[str]:
    """The package modules that ``name`` (at ``path``) imports, anywhere in its source."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(parsed(path)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in known:
                    yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # ``from . import jwt`` imports the submodule itself. The package is
            # counted only when a name is not a submodule (``from . import
            # TokenGuard``): every submodule import initialises its package
            # first, so that edge says nothing ``from .jwt import x`` does not.
            submodules = [f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in known]
            if target in known and len(submodules) < len(node.names):
                yield target
            yield from submodules


def framework_imports(path: Path) -> tuple[set[str], set[str]]:
    """The frameworks ``path`` imports at module level (``TYPE_CHECKING`` blocks aside), and inside functions."""
    tree = parsed(path)
    at_import: set[str] = set()
    deferred: set[str] = set()

    def names(node: ast.AST) -> set[str]:
        if isinstance(node, ast.Import):
            return {alias.name.split(".")[0] for alias in node.names} & FRAMEWORKS
        if isinstance(node, ast.ImportFrom) and not node.level and node.module:
            return {node.module.split(".")[0]} & FRAMEWORKS
        return set()

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue  # types only: never executed
            found = names(child)
            (deferred if in_function else at_import).update(found)
            visit(child, in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef))

    visit(tree, False)
    return at_import, deferred


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: {t for t in imported(name, path, known) if t != name} for name, path in known.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every elementary cycle, once each, written from its smallest module name; shortest first."""
    found: list[list[str]] = []

    def walk(start: str, node: str, path: list[str]) -> None:
        for target in sorted(graph.get(node, ())):
            if target == start:
                found.append([*path, start])
            elif target > start and target not in path:
                walk(start, target, [*path, target])

    for start in sorted(graph):
        walk(start, start, [start])
    return sorted(found, key=lambda cycle: (len(cycle), cycle))


def describe(found: list[list[str]]) -> str:
    return "; ".join(" -> ".join(m.removeprefix("tokenguard.") for m in cycle) for cycle in found)


def test_the_graph_sees_relative_absolute_and_deferred_imports() -> None:
    """The reader finds known edges of each kind, so an empty cycle list means something."""
    graph = import_graph()
    assert "tokenguard.errors" in graph["tokenguard.guard"]  # from .errors import ...
    assert "tokenguard.redis_cache" in graph["tokenguard._assembly"]  # deferred, inside a method
    assert "tokenguard.guard" in graph["tokenguard"]  # the package's __init__
    assert len(graph) >= 30


def test_cycle_finder_finds_a_planted_cycle() -> None:
    """cycles() reports each cycle once, shortest first, and nothing for a graph without one."""
    graph = {"a": {"b"}, "b": {"c", "a"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "a"], ["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_no_import_cycle_in_the_package() -> None:
    """No module imports itself through others, even under TYPE_CHECKING or inside a function."""
    found = cycles(import_graph())
    assert not found, describe(found)


def test_only_the_adapters_import_a_framework() -> None:
    """A module that imports a framework when imported is an adapter; the core defers any it needs."""
    importing = {name for name, path in modules().items() if framework_imports(path)[0]}
    assert importing == ADAPTERS
    deferring = {name for name, path in modules().items() if framework_imports(path)[1]} - ADAPTERS
    assert deferring == DEFERRED_FRAMEWORK_USERS


def test_the_core_never_imports_an_adapter() -> None:
    """Only the adapters import the adapters: the core never reaches into a framework module."""
    graph = import_graph()
    reaching = sorted(
        f"{name} -> {target}"
        for name, targets in graph.items()
        if name not in ADAPTERS
        for target in targets & ADAPTERS
    )
    assert not reaching, reaching


def test_requires_loads_no_framework_until_fastapi_looks() -> None:
    """The one deferred user: ``guard.requires()`` loads no framework; FastAPI's own inspection adds none it had not.

    ``requirement`` imports FastAPI's classes inside ``__signature__``, which
    only FastAPI (already imported then) reads: the import finds modules that
    are loaded, it never loads a framework the application did not.
    """
    import subprocess
    import sys

    program = """
import inspect, sys
from tokenguard import TokenGuard
frameworks = lambda: {m for m in sys.modules if m.split(".")[0] in FRAMEWORKS}
guard = TokenGuard.from_keys(issuer="https://issuer.example", audience="api", hmac_keys={None: "k" * 32})
requirement = guard.requires("read")
assert not frameworks(), sorted(frameworks())
import fastapi
loaded = {m.split(".")[0] for m in frameworks()}
inspect.signature(requirement)
assert {m.split(".")[0] for m in frameworks()} == loaded == {"fastapi", "starlette"}, sorted(frameworks())
print("ok")
""".replace("FRAMEWORKS", repr(tuple(sorted(FRAMEWORKS))))
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "ok", result.stderr[-2000:]


#: The pure helpers of docs/architecture.md's map: no I/O, no clock, tested without a network.
PURE_HELPERS = frozenset(
    "tokenguard." + name
    for name in (
        "bearer",
        "challenge",
        "cachecontrol",
        "response",
        "_abnf",
        "scopes",
        "claims",
        "errors",
        "_config",
        "_logtext",
        "_hmac",
        "_memo",
        "_effects",
    )
)
#: Modules whose import means I/O, threads or a clock of its own.
IO_MODULES = frozenset({"httpx", "socket", "ssl", "asyncio", "threading", "time", "redis", "urllib.request", "os"})


def test_the_pure_helpers_stand_alone() -> None:
    """Data flows down: the pure helpers import only each other, and nothing that performs I/O."""
    graph = import_graph()
    reaching = sorted(f"{name} -> {target}" for name in PURE_HELPERS for target in graph[name] - PURE_HELPERS)
    assert not reaching, reaching
    io = []
    for name in sorted(PURE_HELPERS):
        tree = parsed(modules()[name])
        for node in ast.walk(tree):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module]
                if isinstance(node, ast.ImportFrom) and not node.level and node.module
                else []
            )
            io += [f"{name} imports {found}" for found in names if found in IO_MODULES]
    assert not io, io
