"""Every code block of the README and of the pages under docs/ runs, or says why not.

Sybil parses the Markdown (fenced blocks and ``<!-- skip: next "reason" -->`` directives);
each ``python``, ``bash`` / ``sh`` / ``shell`` and ``yaml`` block is one test, run in the
order of its page:

* a block whose first line is a path comment (``# strategies/cosine_distill.py``,
  ``# cosine.yaml``) is a file the reader saves: it is written there;
* a shell block runs with ``bash -e`` in the page's sandbox, with ``lrbench`` on the PATH;
* a Python block runs in the page's namespace with the sandbox as working folder;
* any other YAML block must parse.

The sandbox is a temporary folder per page holding ``configs/``, ``docs/`` and the
packages, with a *copy* of ``strategies/``: a page that adds a strategy file (the
tutorial) adds it there, never to the repository. A block that does not run is marked in
the page with its reason (a GPU, the network, a long real-data run); the pages under
``docs/results/`` are records of the long real-data runs (``docs/results/regenerate.sh``)
and are collected but not run. A block fails the test with its command's output.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import unittest
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import HANG_S
from sybil import Document, Example
from sybil.example import NotEvaluated
from sybil.parsers.markdown import CodeBlockParser, SkipParser

REPO = Path(__file__).resolve().parents[1]
#: the pages whose blocks are collected
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
#: pages collected but not run, with the reason
NOT_RUN = {"docs/results": "a record of a long real-data run (docs/results/regenerate.sh)"}
SHELL = ("bash", "sh", "shell")
#: a file block's first line: ``# some/path.ext``
FILE_LINE = re.compile(r"^# ([\w./-]+\.(?:py|yaml|yml|toml))\s*$")
#: what a page's sandbox links to, and what it copies (a page may add files there)
LINKED = ("benchmarks", "metrics", "reports", "configs", "docs", "tools")
COPIED = ("strategies",)


class _Page:
    """One page's state: its Sybil document, sandbox and how far its blocks ran."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.document = Document.parse(str(path), *_parsers())
        self.examples: list[Example] = list(self.document)
        self.next = 0  # the index of the first example not yet evaluated
        self.broken: str | None = None  # the failure of an earlier block
        self.sandbox: Path | None = None

    def blocks(self) -> list[int]:
        """The indices of the code blocks (not the skip directives)."""
        return [i for i, e in enumerate(self.examples)
                if not isinstance(e.region.evaluator, type(_skip_evaluator()))]


def _run_file_or_yaml(example: Example) -> None:
    source = example.parsed
    if _file_block(example):
        return
    yaml.safe_load(source)  # a fragment shown to be read: it must at least parse


def _file_block(example: Example) -> bool:
    """Write a file block into the sandbox; False when the block is not one."""
    source: str = example.parsed
    first, _, rest = source.partition("\n")
    m = FILE_LINE.match(first)
    if not m:
        return False
    target = _sandbox(example) / m.group(1)
    target.parent.mkdir(parents=True, exist_ok=True)
    text = rest if target.suffix == ".py" else source
    target.write_text(text, encoding="utf-8")
    return True


def _run_python(example: Example) -> None:
    if _file_block(example):
        return
    here = os.getcwd()
    os.chdir(_sandbox(example))
    try:
        code = compile(example.parsed, f"{example.path}:{example.line}", "exec")
        exec(code, example.namespace)
    finally:
        os.chdir(here)


def _run_shell(example: Example) -> None:
    box = _sandbox(example)
    env = {**os.environ, "PATH": f"{box / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": str(box), "MPLBACKEND": "Agg"}
    done = subprocess.run(["bash", "-e", "-c", example.parsed], cwd=box, env=env,
                          capture_output=True, text=True, timeout=HANG_S)
    if done.returncode:
        raise AssertionError(
            f"{Path(example.path).relative_to(REPO)}:{example.line}: exit {done.returncode}\n"
            f"$ {example.parsed}\n--- stdout\n{done.stdout[-4000:]}\n"
            f"--- stderr\n{done.stderr[-4000:]}")


_SKIP = SkipParser()


def _skip_evaluator() -> Any:
    return _SKIP.skipper


def _parsers() -> list[Any]:
    return [_SKIP, CodeBlockParser("python", _run_python),
            *(CodeBlockParser(lang, _run_shell) for lang in SHELL),
            CodeBlockParser("yaml", _run_file_or_yaml)]


_SANDBOX_ROOT: dict[str, Path] = {}


def _sandbox(example: Example) -> Path:
    """The page's sandbox: configs, docs and the packages, ``strategies/`` copied, and a
    ``bin/lrbench`` that runs this interpreter's ``python -m benchmarks``."""
    page = PAGE_STATE[example.path]
    if page.sandbox is None:
        box = _SANDBOX_ROOT["root"] / re.sub(r"\W", "_", str(page.path.relative_to(REPO)))
        box.mkdir(parents=True)
        for name in LINKED:
            (box / name).symlink_to(REPO / name, target_is_directory=True)
        for name in COPIED:
            shutil.copytree(REPO / name, box / name,
                            ignore=shutil.ignore_patterns("__pycache__"))
        (box / "bin").mkdir()
        shim = box / "bin" / "lrbench"
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m benchmarks "$@"\n')
        shim.chmod(0o755)
        page.sandbox = box
    return page.sandbox


PAGE_STATE: dict[str, _Page] = {}


def _page(path: Path) -> _Page:
    if str(path) not in PAGE_STATE:
        PAGE_STATE[str(path)] = _Page(path)
    return PAGE_STATE[str(path)]


def _evaluate(example: Example) -> None:
    """One example; a skipped block raises ``unittest.SkipTest``."""
    try:
        example.evaluate()
    except NotEvaluated:
        raise unittest.SkipTest("not evaluated") from None


def collected() -> list[tuple[str, int, str]]:
    """(page, example index, language) of every collected block."""
    return [(str(path.relative_to(REPO)), i, _language(_page(path).examples[i]))
            for path in PAGES for i in _page(path).blocks()]


def _language(example: Example) -> str:
    """The fence's language of a code block (Sybil keeps it in the region's lexemes)."""
    return str(example.region.lexemes.get("arguments", "")).split()[0]


BLOCKS = collected()


@pytest.fixture(scope="module", autouse=True)
def _sandbox_root(tmp_path_factory):
    _SANDBOX_ROOT["root"] = tmp_path_factory.mktemp("docs-blocks")
    yield
    _SANDBOX_ROOT.clear()


@pytest.mark.parametrize(("page", "index", "kind"), BLOCKS,
                         ids=[f"{p}:{_page(REPO / p).examples[i].line}:{k}"
                              for p, i, k in BLOCKS])
def test_block(page, index, kind):
    """Run the page's blocks up to this one, in order, then this one."""
    state = _page(REPO / page)
    for prefix, reason in NOT_RUN.items():
        if page.startswith(prefix + "/"):
            pytest.skip(reason)
    while state.next < index:
        earlier = state.examples[state.next]
        state.next += 1
        if state.broken:
            continue
        try:
            _evaluate(earlier)
        except unittest.SkipTest:
            pass
        except BaseException as exc:
            state.broken = f"line {earlier.line}: {str(exc).splitlines()[0][:200]}"
    if state.broken:
        pytest.fail(f"an earlier block of {page} failed ({state.broken})")
    state.next = index + 1
    try:
        _evaluate(state.examples[index])
    except unittest.SkipTest as skip:
        pytest.skip(str(skip))
    except BaseException as exc:
        state.broken = f"line {state.examples[index].line}: {str(exc).splitlines()[0][:200]}"
        raise


def test_blocks_are_collected():
    """The development page and the README state how many blocks are collected, and every
    README block is collected."""
    kinds = [k for _, _, k in BLOCKS]
    stated = (REPO / "docs" / "development.md").read_text()
    counts = (f"**{len(BLOCKS)} code blocks** ({sum(kinds.count(s) for s in SHELL)} shell, "
              f"{kinds.count('python')} Python, {kinds.count('yaml')} YAML)")
    assert counts in stated, f"docs/development.md should say {counts}"
    readme = (REPO / "README.md").read_text()
    assert f"the {len(BLOCKS)} code blocks" in readme, "the README's count is stale"
    fences = re.findall(r"^```(bash|sh|shell|python)\b", readme, flags=re.M)
    assert len(fences) == sum(1 for p, _, _ in BLOCKS if p == "README.md")


def test_the_tutorial_file_is_the_example():
    """The README's and the tutorial's strategy file is ``docs/examples/cosine_distill.py``
    (the tutorial's ``lrbench check cosine_distill`` runs it through the contract kit)."""
    example = (REPO / "docs" / "examples" / "cosine_distill.py").read_text()
    body = example[example.index("from typing import Any"):].strip()
    for page in ("README.md", "docs/add-a-strategy.md"):
        text = (REPO / page).read_text()
        assert "# strategies/cosine_distill.py\n" + body + "\n```" in text, page
