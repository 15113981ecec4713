"""``imap-runtime new-kind NAME [--into DIR]``: writes a kind package from the templates in
``runtime/scaffold_template/`` (package data), the runtime's counterpart of erxes's ``yarn create-plugin``.

The package (``DIR``, default ``./kinds/NAME``) has a :class:`runtime.kinds.Kind` subclass registering a procedure
``NAME:ping``, a GraphQL query field, a route ``POST /NAME/receive`` and a listener actor per integration over a
plain listener class, a README, and tests that pass as generated. Inside the kind imports are relative, so it works
wherever it is put (``docs/kinds.md``, "Writing a kind with the scaffold"). A name is refused (:class:`Refused`,
exit status 2) unless it is a lowercase Python identifier that no installed kind, no module and no route of the
runtime already uses, and ``DIR`` must not exist (an empty folder is used)."""
from __future__ import annotations

import importlib.metadata
import importlib.resources
import keyword
import re
import string
import sys
from pathlib import Path
from typing import Iterable, TextIO

from runtime.kinds import BUILTIN, ENTRY_POINT_GROUP

__all__ = ["Refused", "existing_kinds", "main", "module_of", "render", "validate_name", "write_kind"]

NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")  # the KINDS setting's names (runtime/_checks.py), as a Python identifier
# the runtime's own packages and top-level paths (/<name>/receive, /<name>/rpc beside them)
RESERVED = frozenset({"runtime", "actors", "web", "kinds", "tests", "rpc", "graphql", "health", "ready", "metrics",
                      "receive", "login", "console", "static"})
TEMPLATES = "scaffold_template"
SUFFIX = ".tmpl"


class Refused(ValueError):
    """The name or the folder cannot be used; the message says why."""


def existing_kinds() -> set[str]:
    """The built-in kinds and those installed through the ``imap_runtime.kinds`` entry points."""
    return set(BUILTIN) | {point.name for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def validate_name(name: str, *, existing: Iterable[str] | None = None) -> str:
    if not NAME.fullmatch(name or ""):
        raise Refused(f"{name!r} is not a kind name: a lowercase Python identifier of at most 40 characters "
                      "(a-z first, then a-z, 0-9 or _), e.g. chat or my_channel")
    known = existing_kinds() if existing is None else set(existing)
    if name in known:
        raise Refused(f"{name!r} is an existing kind (installed: {', '.join(sorted(known))}); choose another name")
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        raise Refused(f"{name!r} is a Python keyword; choose another name")
    if name in RESERVED or name in sys.stdlib_module_names:
        raise Refused(f"{name!r} is taken by the runtime or Python's standard library (a package of that name "
                      "would shadow it); choose another name")
    return name


def module_of(folder: Path) -> str:
    """The import name of the package in ``folder``: its name, under each parent that is a package too."""
    parts = [folder.name]
    parent = folder.parent
    while (parent / "__init__.py").is_file() and parent != parent.parent:
        parts.insert(0, parent.name)
        parent = parent.parent
    return ".".join(parts)


def placeholders(name: str, module: str) -> dict[str, str]:
    words = name.split("_")
    camel = "".join(w.capitalize() for w in words if w)
    return {"name": name, "Class": f"{camel}Kind", "Class_": camel, "label": " ".join(w.capitalize() for w in
                                                                                        words if w),
            "prefix": words[0] + "".join(w.capitalize() for w in words[1:] if w), "module": module}


def render(name: str, module: str | None = None) -> dict[str, str]:
    """Each file of the package (path relative to it) -> its text."""
    values = placeholders(name, module or name)
    root = importlib.resources.files("runtime") / TEMPLATES
    out: dict[str, str] = {}

    def walk(node: importlib.resources.abc.Traversable, prefix: str) -> None:
        for child in sorted(node.iterdir(), key=lambda c: c.name):
            if child.is_dir():
                if child.name != "__pycache__":
                    walk(child, f"{prefix}{child.name}/")
            elif child.name.endswith(SUFFIX):
                out[prefix + child.name[: -len(SUFFIX)]] = string.Template(child.read_text()).substitute(values)

    walk(root, "")
    return out


def write_kind(name: str, into: Path, *, existing: Iterable[str] | None = None) -> list[Path]:
    """Validate ``name`` and ``into``, then write the package; the paths written."""
    validate_name(name, existing=existing)
    into = into.resolve()
    if not NAME.fullmatch(into.name):
        raise Refused(f"{into}: the package's folder must be named as a lowercase Python identifier (it is its "
                      "import name)")
    if into.exists() and not (into.is_dir() and not any(into.iterdir())):
        raise Refused(f"{into} already exists: not overwriting it (give --into another folder)")
    files = render(name, module_of(into))
    written = []
    for relative, text in files.items():
        path = into / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


def main(name: str, into: str | None, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """The command: 0 when written, 2 when refused (the reason on ``err``, default stderr)."""
    out, err = out or sys.stdout, err or sys.stderr
    folder = Path(into) if into else Path("kinds") / name
    try:
        written = write_kind(name, folder)
    except Refused as exc:
        print(f"imap-runtime new-kind: {exc}", file=err)
        return 2
    root = folder.resolve()
    values = placeholders(name, module_of(root))
    print(f"Wrote the kind {name!r} in {root}:", *(f"  {p.relative_to(root)}" for p in written), sep="\n", file=out)
    importable = root.parents[values["module"].count(".")]  # the folder above the package's top
    print(f"Its tests: python -m pytest {root / 'tests'} (with {importable} on PYTHONPATH)", file=out)
    print(f"To enable it: KINDS=imap,api,{name}, and the kind declared in the entry point group {ENTRY_POINT_GROUP}: "
          f"{name} = {values['module']}:{values['Class']} (its README.md says how)", file=out)
    return 0
