"""``--set key.path=value`` overrides and the one-line form of a validation error (which names the
``--set`` flag that gave a bad value, else the matrix file)."""

from __future__ import annotations

import re
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ValidationError,
)

from benchmarks.config.schema import MatrixConfig, _Strict
from benchmarks.config.yaml_io import MatrixFileError, _StrictLoader
from benchmarks.errors import LrbenchError, closest
from metrics.errors import short_repr

#: a part of an error's location that pydantic adds for a member of a union or a
#: validator wrapper (``str``, ``list[int]``, ``function-after[...]``), not a field
_TAG = re.compile(r"^(str|int|float|bool|none|list|dict|tuple|literal|is-instance|union|"
                  r"constrained-\w+|function-\w+|lax-or-strict|json-or-python|nullable|"
                  r"default)(\[.*\])?$", re.S)


def _where(loc: tuple[Any, ...]) -> str:
    """An error's location as the dotted path of the matrix file (union tags left out: a
    type's name, or a model class's name when a union holds one)."""
    models = {c.__name__ for c in _Strict.__subclasses__()}
    return ".".join(str(p) for p in loc
                    if not (isinstance(p, str) and (_TAG.match(p) or p in models)))


def _is_type_error(err: Any) -> bool:
    kind = str(err.get("type", ""))
    return kind.endswith(("_type", "_parsing")) or kind in ("literal_error", "none_required")


def blame(source: str, overrides: list[str] | None, where: str) -> str:
    """Who gave the value at ``where``: the last ``--set`` that wrote it or below it (or
    a section above it), else the matrix file ``source``."""
    for assignment in reversed(overrides or []):
        path = assignment.partition("=")[0].strip()
        if where and (path == where or path.startswith(f"{where}.")
                      or where.startswith(f"{path}.")):
            return f"--set {assignment!r}"
    return source


def _format_error(exc: ValidationError, source: str, overrides: list[str] | None = None,
                  model: type[BaseModel] | None = None) -> LrbenchError:
    """The first problem of a validation error as one line: where (the field's dotted
    path, without pydantic's union tags), what, and who gave it (a ``--set`` flag or the
    file). A value that fits no member of a union reports each member's expectation; a
    value of the right type that breaks a member's rule reports that rule. ``model``: the
    class validated (default :class:`MatrixConfig`), for the hint of an unknown key."""
    errors = exc.errors()
    where = _where(errors[0].get("loc", ()))
    deeper = [e for e in errors if _where(e.get("loc", ())).startswith(f"{where}.")]
    if deeper and _is_type_error(errors[0]):  # the value fits a member of the union whose
        where = _where(deeper[0].get("loc", ()))  # field is wrong: report that field
    group = [e for e in errors if _where(e.get("loc", ())) == where]
    err = next((e for e in group if not _is_type_error(e)), group[0])
    source = blame(source, overrides, where)
    if err.get("type") == "extra_forbidden":
        parent = model or MatrixConfig
        for part in err["loc"][:-1]:
            field = parent.model_fields.get(str(part)) if isinstance(part, str) else None
            ann = getattr(field, "annotation", None)
            parent = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else parent
        key = str(err["loc"][-1])
        hint = closest(key, parent.model_fields)
        return LrbenchError(f"{source}: unknown key {where!r}.{hint} Remove or rename it")
    msg = err["msg"]
    if _is_type_error(err) and len(group) > 1:
        wanted = dict.fromkeys(e["msg"].removeprefix("Input should be ") for e in group)
        msg = "Input should be " + " or ".join(wanted)
    got = short_repr(err.get("input"))
    return LrbenchError(f"{source}: {where}: {msg} (got {got})")


def set_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one ``--set a.b=c`` (the value parsed as YAML) to a raw config mapping."""
    if "=" not in assignment:
        raise LrbenchError(f"--set {assignment!r}: write it as key.path=value")
    path, _, raw = assignment.partition("=")
    if not all(key.strip() for key in path.split(".")):
        raise LrbenchError(f"--set {assignment!r}: give the key before '=' (each part of "
                           "its dotted path non-empty), e.g. --set training.iterations=20")
    try:
        value = yaml.load(raw, Loader=_StrictLoader)  # noqa: S506 (a safe loader)
    except MatrixFileError as exc:
        raise LrbenchError(f"--set {assignment!r}: {exc.problem}") from None
    except (yaml.YAMLError, ValueError):
        value = raw
    node = data
    keys = path.strip().split(".")
    for key in keys[:-1]:
        if not isinstance(node.get(key, {}), dict):
            raise LrbenchError(f"--set {assignment!r}: {key!r} is not a section")
        node = node.setdefault(key, {})
    node[keys[-1]] = value
