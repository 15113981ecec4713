"""The house's layering, read from the code's own imports (every ``import``, at module level or inside a function):
no import cycle among the project's modules, ``runtime/`` (the bottom layer) imports neither ``actors/`` nor
``web/``, nothing below ``kinds/`` imports a kind (kinds are loaded by name, runtime/kinds.py), no kind imports
another, and only the commands import the composition root ``app/``, which sits on top of everything."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("runtime", "actors", "web", "kinds", "app")
# ``python -m runtime``, the documented way to start from a checkout: a command that nothing imports
COMMANDS = {"runtime.__main__"}


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The project modules ``path`` imports (``from a import b`` counts ``a.b`` when that is a module)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports(path, name, known) for name, path in found.items()}


def test_no_import_cycle_among_the_project_s_modules():
    edges = graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt in edges and "." in node and nxt.startswith(node + "."):
                continue  # a package's __init__ handing on its own submodules is no cycle
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_runtime_imports_neither_actors_nor_web():
    edges = graph()
    upward = {name: sorted(t for t in targets if t.split(".")[0] in ("actors", "web", "kinds"))
              for name, targets in edges.items() if name.split(".")[0] == "runtime"}
    assert {name: t for name, t in upward.items() if t} == {}, "runtime/ reaches up"


def test_only_the_commands_import_the_composition_root():
    edges = graph()
    importers = {name for name, targets in edges.items()
                 if name.split(".")[0] != "app" and any(t.split(".")[0] == "app" for t in targets)}
    assert importers == COMMANDS
    assert not any(t.split(".")[0] == "app" for name in COMMANDS for t in edges[name] if t != "app.main")


def test_the_graph_sees_known_imports():  # the reader itself: a cycle test over an empty graph would prove nothing
    edges = graph()
    assert "runtime.hosts" in edges["kinds.imap.connection"] and "kinds.imap.oauth" in edges["kinds.imap.smtp"]
    assert "actors.supervisor" in edges["app.process"] and "app.main" in edges["runtime.__main__"]


def kind_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "kinds" and len(parts) > 1 else None


def test_no_kind_imports_another_kind():
    edges = graph()
    crossing = {name: sorted(t for t in targets if kind_of(t) and kind_of(t) != kind_of(name))
                for name, targets in edges.items() if kind_of(name)}
    assert {name: t for name, t in crossing.items() if t} == {}, "a kind imports another kind"
    assert {"kinds.imap", "kinds.api"} <= {n for n in edges if kind_of(n)}  # the check sees the kinds


def test_nothing_below_the_kinds_imports_one():
    edges = graph()
    reaching = {name: sorted(t for t in targets if t.split(".")[0] == "kinds")
                for name, targets in edges.items() if name.split(".")[0] in ("runtime", "actors", "web")}
    assert {name: t for name, t in reaching.items() if t} == {}, "runtime/, actors/ or web/ imports a kind"
