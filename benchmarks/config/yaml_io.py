"""lrbench's one YAML reader: a safe loader refusing duplicate keys, deep nesting and alias bombs,
and the bounded, UTF-8-only reading of a YAML file (matrix files, stores' matrix.yaml, claims)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from benchmarks.errors import LrbenchError

#: the largest matrix file read, its deepest nesting and the most values it may hold once
#: its aliases are expanded: a matrix is a few dozen lines, and without bounds a 950-byte
#: alias bomb (a billion leaves) or 5,000 nested brackets exhaust memory or the stack
MAX_BYTES = 1_000_000

MAX_DEPTH = 64

MAX_NODES = 100_000


class MatrixFileError(yaml.YAMLError):
    """A matrix file that is valid YAML but too large, too deep or self-referencing."""

    def __init__(self, problem: str, mark: Any = None) -> None:
        super().__init__(problem)
        self.problem, self.problem_mark = problem, mark


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (plain YAML keeps the
    last one silently: a second ``strategies:`` would drop the first's strategies), nesting
    deeper than :data:`MAX_DEPTH`, and more than :data:`MAX_NODES` values once aliases are
    expanded (an alias is a reference: a few lines can stand for a billion values)."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise MatrixFileError(f"nested deeper than {MAX_DEPTH} levels; a matrix or "
                                      "claims file is a few levels deep",
                                      self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_document(self, node: yaml.Node) -> Any:
        _expanded_size(node, 0, {}, set())
        return super().construct_document(node)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # ``<<: *base``: merged below by SafeLoader (its keys may be
                # given again here, which is what a merge is for)
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, list | dict):
                continue  # unhashable: yaml itself refuses it below
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice in one mapping; keep one "
                    "of them", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _expanded_size(node: yaml.Node, depth: int, memo: dict[int, tuple[int, int]],
                   active: set[int]) -> tuple[int, int]:
    """(values, height) of ``node`` with its aliases expanded, refusing a document over
    :data:`MAX_NODES` values or :data:`MAX_DEPTH` levels, or an alias inside itself.
    Each node is measured once (``memo``), so a bomb is refused in linear time."""
    key = id(node)
    if key in active:
        raise MatrixFileError("an alias refers to the value that contains it; give the "
                              "values instead", node.start_mark)
    if key not in memo:
        if depth > MAX_DEPTH:
            raise MatrixFileError(f"nested deeper than {MAX_DEPTH} levels once its aliases "
                                  "are expanded", node.start_mark)
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        active.add(key)
        size, height = 1, 0
        for child in children:
            n, h = _expanded_size(child, depth + 1, memo, active)
            size, height = size + n, max(height, h + 1)
            if size > MAX_NODES:
                raise MatrixFileError(f"holds more than {MAX_NODES:,} values once its aliases "
                                      "are expanded (an alias bomb?); write the values out",
                                      node.start_mark)
        active.discard(key)
        memo[key] = (size, height)
    size, height = memo[key]
    if depth + height > MAX_DEPTH:
        raise MatrixFileError(f"nested deeper than {MAX_DEPTH} levels once its aliases are "
                              "expanded", node.start_mark)
    return size, height


def read_yaml(path: str | Path, what: str = "matrix file", limit: int = MAX_BYTES) -> Any:
    """The one way lrbench reads a YAML file (matrix files, a store's ``matrix.yaml``,
    claims files, tune's files): a regular file (not a FIFO, a device or a folder:
    ``metrics.io.read_regular``) of at most ``limit`` bytes of UTF-8 text, parsed by
    :func:`parse_yaml` (every bound of :class:`_StrictLoader`). Every problem is a one-line
    ``LrbenchError`` naming the file; ``FileNotFoundError`` when there is none."""
    from metrics.io import check_regular, read_regular

    path = Path(path)
    fix = f"give the path of a {what} (a YAML text file)"
    if not check_regular(path, what, fix):
        raise FileNotFoundError(2, "No such file", str(path))
    size = path.stat().st_size
    if size > limit:
        raise LrbenchError(f"{path}: {size:,} bytes, more than a {what} may hold "
                           f"({limit:,}); is it the right file?")
    try:
        raw = read_regular(path, limit, what, fix)
    except PermissionError as exc:
        raise LrbenchError(f"{path}: cannot read this {what} ({exc.strerror}); fix its "
                           "permissions") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise LrbenchError(f"{path}: line {line}: not UTF-8 text (byte "
                           f"0x{raw[exc.start]:02x}); save the file as UTF-8") from None
    return parse_yaml(text, str(path))


def parse_yaml(text: str, source: str) -> Any:
    """YAML text parsed by :class:`_StrictLoader` (a key given twice, nesting deeper than
    :data:`MAX_DEPTH`, more than :data:`MAX_NODES` values once aliases are expanded: all
    refused); a problem is a one-line ``LrbenchError`` starting with ``source`` and the
    line."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a safe loader)
    except yaml.reader.ReaderError as exc:  # a character YAML refuses, e.g. a NUL byte
        line = text[:exc.position].count("\n") + 1
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise LrbenchError(f"{source}: line {line}: character U+{code:04X} is not allowed in "
                           "YAML (a NUL byte or another control character); remove it"
                           ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        kind = "" if isinstance(exc, MatrixFileError) else "YAML syntax error: "
        raise LrbenchError(f"{source}:{line}: {kind}{problem}") from None
    except (ValueError, RecursionError) as exc:  # a value YAML cannot represent, e.g. a
        # 5,000-digit integer
        raise LrbenchError(f"{source}: a value cannot be read ({str(exc)[:100]}); fix it"
                           ) from None
