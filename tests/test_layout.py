"""The package layout's rules (docs/architecture.md), checked on the source itself:
imports point one way, the results format and file writing each live in one place."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("benchmarks", "strategies", "metrics", "reports")


def modules(package: str) -> list[Path]:
    return sorted(p for p in (REPO / package).rglob("*.py") if "perf" not in p.parts)


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (lazy imports inside functions too)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
    return out


def top(name: str) -> str:
    return name.partition(".")[0]


#: what each package may import of the others (reports: only the store's reader)
ALLOWED = {
    "metrics": set(),
    "strategies": {"metrics"},
    "reports": {"metrics", "benchmarks.run.store"},
    "benchmarks": {"metrics", "strategies", "benchmarks"},
}


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_point_one_way(package):
    bad = []
    for path in modules(package):
        for name in imported(path):
            other = top(name)
            if other not in PACKAGES or other == package:
                continue
            if not any(name == a or (a in PACKAGES and other == a) for a in ALLOWED[package]):
                bad.append(f"{path.relative_to(REPO)} imports {name}")
    if package == "benchmarks":  # only the command line (its commands) imports reports
        bad = [b for b in bad if not (b.startswith("benchmarks/commands/")
                                      and " imports reports" in b)]
    assert not bad, "\n".join(bad)


def test_one_atomic_writer():
    """Files are replaced in one function (metrics.io.atomic_write), nowhere else."""
    found = []
    for package in PACKAGES:
        for path in modules(package):
            text = path.read_text()
            for needle in ("os.replace(", "os.rename(", ".replace(path", "mkstemp("):
                if needle in text and path != REPO / "metrics" / "io.py":
                    found.append(f"{path.relative_to(REPO)}: {needle}")
    assert not found, found


def test_the_runner_only_orchestrates():
    assert len((REPO / "benchmarks" / "runner.py").read_text().splitlines()) < 250


def test_result_json_is_read_through_the_store_only():
    """Every module that opens a ``result.json`` reads it with the store's reader
    (benchmarks.run.store.read_result), the one place that knows its format."""
    found = []
    for package in PACKAGES:
        for path in modules(package):
            text = path.read_text()
            opens = any(isinstance(n, ast.Constant) and isinstance(n.value, str)
                        and n.value.endswith("result.json") for n in ast.walk(ast.parse(text)))
            if path.parent.name != "store" and opens and "read_result" not in text:
                found.append(str(path.relative_to(REPO)))
    assert not found, found


#: the most lines a module of the four packages may have: a reader takes it in at once
MAX_LINES = 450


def test_no_module_a_reader_has_to_scroll_through():
    long = [f"{p.relative_to(REPO)}: {n} lines" for package in PACKAGES
            for p in sorted((REPO / package).rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > MAX_LINES]
    assert not long, f"split these along their concerns (at most {MAX_LINES} lines):\n" + \
        "\n".join(long)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(path: Path) -> set[str]:
    """The modules ``path`` imports when it runs, at any depth (lazy imports inside
    functions too), relative imports resolved; imports under ``if TYPE_CHECKING:`` are
    left out (they are never executed)."""
    tree = ast.parse(path.read_text(), str(path))
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and "TYPE_CHECKING" in ast.unparse(node.test)
                   for child in node.body for n in ast.walk(child)}
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    out = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            out |= {base} | {f"{base}.{a.name}" for a in node.names}
    return out


def test_no_import_circle():
    """The modules of the four packages import each other without a circle (lazy imports
    inside functions count: a circle hidden in a function is still one). A module importing
    its own package (``strategies.registry`` imports ``strategies`` to register the built-in
    strategies) is no circle: importing a submodule runs its package first anyway."""
    paths = {module_name(p): p for package in PACKAGES
             for p in (REPO / package).rglob("*.py")}

    def resolve(name: str) -> str | None:
        while name and name not in paths:
            name = name.rpartition(".")[0]
        return name or None

    graph = {m: {r for n in runtime_imports(p) if (r := resolve(n)) and r != m
                 and not m.startswith(f"{r}.")}
             for m, p in paths.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    circles = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                circles.append(" -> ".join([*path[path.index(n):], n]))
            elif n not in state:
                visit(n, [*path, n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not circles, "\n".join(circles)
