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
