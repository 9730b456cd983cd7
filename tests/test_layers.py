"""The import contract: which package may import which, read from every module's AST.

Every import counts wherever it is written: at module level, inside a function (it runs
when the function is called) and under ``if TYPE_CHECKING:`` (a type checker follows
it). Relative imports are resolved, and ``from package import name`` is an import of the
submodule when ``name`` is one. What is checked:

- :data:`RULES`: the layers. The SDK (``chatroom``) is the bottom: a bot installs it
  alone, so it imports no other package; the server, the REPL and the bots are peers on
  top of it and import none of each other. ``make demo`` runs the server and the bots as
  processes (``python -m``), so the REPL needs neither. :data:`EXCEPTIONS` lists what a
  rule lets through, and how.
- :data:`BOUNDARIES`: a module or a name whose last part starts with ``_`` is private to
  the innermost boundary package holding it: ``chatroom._hooks`` is the SDK's, and
  ``from chatroom_server.server import _Conn`` is for chatroom_server's modules only.
- No import cycle between modules, counting every import (those under
  ``TYPE_CHECKING`` too: a type checker and a reader follow them, and a circle of
  type-only imports is a circle in the design); :data:`KNOWN_CYCLES` holds the ones
  left, each with its way out, and the test fails once one is gone so that the list
  only shrinks. A module that needs a type from above names what it uses as a
  ``Protocol`` of its own (chatroom_server.web's ``Host``).

To extend the contract, add rows: the server core's, for instance, are
``Rule("chatroom_server.core", ("chatroom_server.transport",), "the core knows no
transport")`` and, in BOUNDARIES, ``"chatroom_server.transport.irc"`` and
``"chatroom_server.transport.jsonline"``, so that no transport imports another's private
names. Tests and bench/ are outside the contract: they may look inside anything.
"""

from __future__ import annotations

import ast
import importlib
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Rule:
    """No module under ``importer`` imports anything under ``forbidden``."""

    importer: str
    forbidden: tuple[str, ...]
    why: str


@dataclass(frozen=True)
class Exception_:
    """``module`` may import what is under ``target`` despite the rules, but only where
    it does not run at import time (in a function, or for a type checker)."""

    module: str
    target: str
    why: str


RULES: tuple[Rule, ...] = (
    Rule(
        "chatroom",
        ("chatroom_server", "chatroom_cli", "chatroom_bots"),
        "the SDK is the bottom layer: a bot installs it alone",
    ),
    Rule(
        "chatroom_server",
        ("chatroom_cli", "chatroom_bots"),
        "the server serves any client and needs none of the tools",
    ),
    Rule(
        "chatroom_cli",
        ("chatroom_server", "chatroom_bots"),
        "the REPL is a client of the SDK; the demo runs the server and the bots as processes",
    ),
    Rule(
        "chatroom_bots",
        ("chatroom_server", "chatroom_cli"),
        "bots are clients of the SDK (their tests use chatroom.testing)",
    ),
    # The server's own layers (docs/ARCHITECTURE.md): the config, the sans-I/O session
    # and the command table under the transports, and the transports under nothing but
    # the server's public face.
    Rule(
        "chatroom_server.config",
        ("chatroom_server.server", "chatroom_server.session", "chatroom_server.irc"),
        "the settings are read by every layer and know none of them",
    ),
    Rule(
        "chatroom_server.session",
        ("chatroom_server.server", "chatroom_server.irc", "chatroom_server.outbox"),
        "the session is the protocol without I/O: no server, no transport, no socket",
    ),
    Rule(
        "chatroom_server.commands",
        ("chatroom_server.server", "chatroom_server.irc"),
        "the command table names its handlers and imports no server or transport",
    ),
    Rule(
        "chatroom_server.irc",
        ("chatroom_server.server",),
        "the IRC gateway is a transport: it asks the server only through irc.session.Core",
    ),
    # The server's parts (docs/ARCHITECTURE.md): ChatServer makes each and gives it what
    # it needs; none of them reaches back into the server.
    *(
        Rule(
            f"chatroom_server.{part}",
            ("chatroom_server.server",),
            "a part of the server is given what it needs and imports no server",
        )
        for part in (
            "backends",
            "conn",
            "presence",
            "login",
            "replay",
            "node",
            "replies",
            "handlers",
            "runner",
            "listeners",
            "housekeeping",
        )
    ),
    Rule(
        "chatroom_server.presence",
        ("chatroom_server.login", "chatroom_server.replay", "chatroom_server.irc"),
        "the roster knows no login, no replay and no transport: they use it",
    ),
    Rule(
        "chatroom_server.replay",
        ("chatroom_server.login", "chatroom_server.presence", "chatroom_server.irc"),
        "the replay reads the log for a connection: it knows no login and no roster",
    ),
    Rule(
        "chatroom_server.handlers",
        ("chatroom_server.listeners", "chatroom_server.runner", "chatroom_server.irc"),
        "a handler runs a command for a connection, whatever its transport",
    ),
    Rule(
        "chatroom_server.runner",
        ("chatroom_server.listeners", "chatroom_server.irc", "chatroom_server.web"),
        "the runner is the core the transports share: it imports none of them",
    ),
    Rule(
        "chatroom_server.replies",
        ("chatroom_server.handlers", "chatroom_server.runner", "chatroom_server.listeners"),
        "a connection's output order is below everything that answers it",
    ),
)

EXCEPTIONS: tuple[Exception_, ...] = (
    Exception_(
        "chatroom.testing",
        "chatroom_server",
        "the test kit runs a real server when a test starts one: importing chatroom.testing "
        "needs no server",
    ),
)

BOUNDARIES: tuple[str, ...] = ("chatroom", "chatroom_server", "chatroom_cli", "chatroom_bots")
# Boundaries inside a package: a transport's private names are its own.
INNER_BOUNDARIES: tuple[str, ...] = ("chatroom_server.irc",)

KNOWN_CYCLES: dict[frozenset[str], str] = {}


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the imported module (ours resolved to the module file that defines it)
    names: tuple[str, ...]  # names taken from it (``from target import a, b``)
    path: Path
    line: int
    at_import: bool  # runs when ``module`` is imported (module level, not TYPE_CHECKING)
    typing_only: bool

    def __str__(self) -> str:
        what = f"{self.target} ({', '.join(self.names)})" if self.names else self.target
        where = "" if self.at_import else " (typing)" if self.typing_only else " (in a function)"
        return f"{self.path.relative_to(ROOT)}:{self.line}: {self.module} imports {what}{where}"


def under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def private(part: str) -> bool:
    return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))


def package_modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the distribution's packages (pyproject's package folders): dotted
    name -> file."""
    meta = tomllib.loads((root / "pyproject.toml").read_text())
    modules: dict[str, Path] = {}
    for where in meta["tool"]["setuptools"]["packages"]["find"]["where"]:
        for init in sorted((root / where).glob("*/__init__.py")):
            for path in sorted(init.parent.rglob("*.py")):
                parts = path.relative_to(root / where).with_suffix("").parts
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                modules[".".join(parts)] = path
    return modules


class _Collector(ast.NodeVisitor):
    def __init__(self, module: str, path: Path, modules: dict[str, Path]) -> None:
        self.module, self.path, self.modules = module, path, modules
        self.is_package = path.name == "__init__.py"
        self.functions = 0
        self.typing = 0
        self.found: list[Import] = []

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.functions += 1
        self.generic_visit(node)
        self.functions -= 1

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
        ):
            self.typing += 1
            for stmt in node.body:
                self.visit(stmt)
            self.typing -= 1
            for stmt in node.orelse:
                self.visit(stmt)
        else:
            self.generic_visit(node)

    def _add(self, target: str, names: tuple[str, ...], line: int) -> None:
        self.found.append(
            Import(
                self.module,
                target,
                names,
                self.path,
                line,
                at_import=not self.functions and not self.typing,
                typing_only=bool(self.typing),
            )
        )

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, (), node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = self._absolute(node.level, node.module)
        names: list[str] = []
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            if submodule in self.modules:
                self._add(submodule, (), node.lineno)
            else:
                names.append(alias.name)
        if names:
            self._add(base, tuple(names), node.lineno)

    def _absolute(self, level: int, name: str | None) -> str:
        if level == 0:
            assert name is not None
            return name
        package = self.module.split(".") if self.is_package else self.module.split(".")[:-1]
        base = package[: len(package) - (level - 1)]
        return ".".join([*base, name] if name else base)


def collect_source(module: str, path: Path, source: str, modules: dict[str, Path]) -> list[Import]:
    collector = _Collector(module, path, modules)
    collector.visit(ast.parse(source, str(path)))
    return collector.found


def collect(modules: dict[str, Path]) -> list[Import]:
    found: list[Import] = []
    for module, path in modules.items():
        found += collect_source(module, path, path.read_text(encoding="utf-8"), modules)
    return found


def layer_violations(imports: Iterable[Import]) -> Iterator[str]:
    for imp in imports:
        for rule in RULES:
            if not under(imp.module, rule.importer):
                continue
            for forbidden in rule.forbidden:
                if not under(imp.target, forbidden):
                    continue
                excused = any(
                    imp.module == e.module and under(imp.target, e.target) and not imp.at_import
                    for e in EXCEPTIONS
                )
                if not excused:
                    yield f"{imp}: {rule.why}"


def boundary_of(name: str) -> str | None:
    """The innermost boundary package that holds ``name``."""
    holding = [b for b in (*BOUNDARIES, *INNER_BOUNDARIES) if under(name, b)]
    return max(holding, key=len) if holding else None


def private_violations(imports: Iterable[Import]) -> Iterator[str]:
    for imp in imports:
        parts = imp.target.split(".")
        owners: list[str] = []
        for i, part in enumerate(parts):
            if private(part):
                owners.append(".".join(parts[:i]))
                break
        if any(private(n) for n in imp.names):
            owners.append(imp.target)
        for owner in owners:
            boundary = boundary_of(owner)
            if boundary is not None and not under(imp.module, boundary):
                yield f"{imp}: private to {boundary}"


def cycles(imports: Iterable[Import], modules: dict[str, Path]) -> list[frozenset[str]]:
    """Strongly connected components of more than one module, among all the imports
    (Tarjan's algorithm, iterative)."""
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for imp in imports:
        target = imp.target
        while target and target not in modules:  # an import of a name: its module
            target = target.rpartition(".")[0]
        if target and target != imp.module:
            graph[imp.module].add(target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(frozenset(component))
    return found


@pytest.fixture(scope="module")
def modules() -> dict[str, Path]:
    return package_modules()


@pytest.fixture(scope="module")
def imports(modules: dict[str, Path]) -> list[Import]:
    return collect(modules)


def test_every_package_is_placed_in_the_contract(modules: dict[str, Path]) -> None:
    packages = {m.split(".")[0] for m in modules}
    assert packages == set(BOUNDARIES)
    assert packages <= {r.importer for r in RULES}


def test_the_layers_hold(imports: list[Import]) -> None:
    assert list(layer_violations(imports)) == []


def test_no_package_imports_another_ones_private_modules_or_names(
    imports: list[Import],
) -> None:
    assert list(private_violations(imports)) == []


def test_no_import_cycles_but_the_known_ones(
    imports: list[Import], modules: dict[str, Path]
) -> None:
    found = set(cycles(imports, modules))
    assert found - set(KNOWN_CYCLES) == set(), "new import cycles"
    assert set(KNOWN_CYCLES) - found == set(), "gone: take them off KNOWN_CYCLES"


def test_lazy_exports_are_the_names_their_type_checking_imports_say(
    modules: dict[str, Path], imports: list[Import]
) -> None:
    """A package that imports its names on first use (chatroom.extras.lazy_exports) names
    them twice, for Python and for type checkers: both must agree."""
    checked = 0
    for imp in imports:
        if not (imp.typing_only and modules[imp.module].name == "__init__.py" and imp.names):
            continue
        package = importlib.import_module(imp.module)
        if "lazy_exports" not in vars(package):
            continue
        home = importlib.import_module(imp.target)
        for name in imp.names:
            assert name in package.__all__, f"{imp}: {name} is not in __all__"
            assert getattr(package, name) is getattr(home, name), f"{imp}: {name}"
            checked += 1
    assert checked >= 3 + 5 + 7  # chatroom_cli, chatroom_server, chatroom_bots.load


def test_the_contract_sees_what_it_forbids() -> None:
    """The checks on made-up modules: an import in a function, a relative one, one for
    type checkers only, a private module and a private name, and a cycle."""
    modules = {
        name: ROOT / "made-up" / f"{name.replace('.', '/')}.py"
        for name in (
            "chatroom",
            "chatroom.a",
            "chatroom._hidden",
            "chatroom.c",
            "chatroom.d",
            "chatroom_bots.b",
        )
    }
    sources = {
        "chatroom.a": (
            "from typing import TYPE_CHECKING\n"
            "from . import _hidden\n"  # fine: the SDK's own
            "if TYPE_CHECKING:\n"
            "    from chatroom_cli.repl import Repl\n"
            "def f() -> None:\n"
            "    from chatroom_server import ChatServer\n"
        ),
        "chatroom._hidden": "import chatroom.a\n",
        "chatroom_bots.b": ("from chatroom import _hidden\nfrom chatroom.a import _name, public\n"),
        # a circle of which one half is for type checkers only: a circle all the same
        "chatroom.c": "from chatroom.d import D\n",
        "chatroom.d": (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from chatroom.c import C\n"
        ),
    }
    found = [
        imp
        for module, source in sources.items()
        for imp in collect_source(module, modules[module], source, modules)
    ]
    layers = list(layer_violations(found))
    assert len(layers) == 2
    assert "chatroom_cli.repl (Repl) (typing)" in layers[0]
    assert "chatroom_server (ChatServer) (in a function)" in layers[1]
    privates = list(private_violations(found))
    assert [p.split(": ", 1)[1] for p in privates] == [
        "chatroom_bots.b imports chatroom._hidden: private to chatroom",
        "chatroom_bots.b imports chatroom.a (_name, public): private to chatroom",
    ]
    assert sorted(cycles(found, modules), key=sorted) == [
        frozenset({"chatroom.a", "chatroom._hidden"}),
        frozenset({"chatroom.c", "chatroom.d"}),
    ]
