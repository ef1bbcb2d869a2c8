"""MkDocs hooks of the documentation site (``mkdocs.yml``, ``hooks:``).

``on_files`` adds the page ``reference/strategies.md``, generated from the strategy
registry when the site is built: every registered strategy (a file in ``strategies/`` or
an installed package's ``lrbench.strategies`` entry point) with its ``Config`` fields,
their types, defaults, allowed values, tunable ranges and descriptions. A new strategy
appears there without editing a page. :func:`strategies_page` is the page's text, also
used by the tests.
"""

from __future__ import annotations

import sys
import typing
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
#: where the generated page goes in the site
PAGE = "reference/strategies.md"

#: annotated_types constraint class name -> how the page writes it
_BOUNDS = {"Ge": ">=", "Gt": ">", "Le": "<=", "Lt": "<", "MultipleOf": "multiple of",
           "MinLen": "length >=", "MaxLen": "length <="}


def _cell(text: Any) -> str:
    """``text`` fit for a Markdown table cell (pipes escaped, one line)."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _type_name(annotation: Any) -> str:
    """A readable type: ``float``, ``int | None``, ``one of random, herding``."""
    if typing.get_origin(annotation) is typing.Literal:
        return "one of " + ", ".join(map(str, typing.get_args(annotation)))
    name = getattr(annotation, "__name__", None)
    if name and not typing.get_args(annotation):
        return name
    return str(annotation).replace("typing.", "").replace("NoneType", "None")


def _default(field: Any) -> str:
    """The field's default as Python writes it (a default factory is called)."""
    try:
        return repr(field.get_default(call_default_factory=True))
    except TypeError:  # a factory that needs the validated data
        return "(computed)"


def _allowed(field: Any) -> str:
    """The field's bounds (``>= 0``, ``< 1``), empty when it has none."""
    out = []
    for item in field.metadata:
        for attr in ("ge", "gt", "le", "lt", "multiple_of", "min_length", "max_length"):
            value = getattr(item, attr, None)
            kind = type(item).__name__
            if value is not None and kind in _BOUNDS:
                out.append(f"{_BOUNDS[kind]} {value:g}" if isinstance(value, float)
                           else f"{_BOUNDS[kind]} {value}")
    return ", ".join(dict.fromkeys(out))


def strategy_section(spec: Any) -> str:
    """One strategy's section: its summary, where it comes from, and its fields' table."""
    cls = spec.cls
    doc = (cls.__doc__ or "").strip()
    module = cls.__module__
    where = (f"`{module.replace('.', '/')}.py`" if spec.source == "builtin"
             else f"package `{spec.package}` ({spec.source})")
    lines = [f"## `{spec.name}`", "", doc.splitlines()[0] if doc else "", "",
             f"Defined in {where}, class `{cls.__name__}`."]
    tunables = spec.tunables
    inactive = spec.inactive_in_first_experience
    fields = spec.config_cls.model_fields
    if not fields:
        lines += ["", "No hyperparameters."]
    else:
        lines += ["", "| hyperparameter | type | default | allowed | `lrbench tune` searches "
                  "| description |", "|---|---|---|---|---|---|"]
        for name, field in fields.items():
            tune = tunables[name].describe() if name in tunables else ""
            note = field.description or ""
            if name in inactive:
                note += " (changes nothing in the first experience)"
            lines.append(f"| `{name}` | {_cell(_type_name(field.annotation))} | "
                         f"`{_cell(_default(field))}` | {_cell(_allowed(field))} | "
                         f"{_cell(tune)} | {_cell(note)} |")
    return "\n".join(lines) + "\n"


def strategies_page() -> str:
    """The whole page, from the registry as this process sees it."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from strategies import available_strategies

    specs = available_strategies()
    head = [
        "# Strategies reference", "",
        "Generated from the strategy registry when the site is built "
        "(`tools/docs_hooks.py`): every registered strategy, its `Config` fields with their "
        "types, defaults, allowed values, the ranges `lrbench tune` searches and their "
        "descriptions. `lrbench list strategies [--json]` prints the same. A new file in "
        "`strategies/` (see [Add a strategy](../add-a-strategy.md)) or an installed "
        "package's `lrbench.strategies` entry point appears here by itself. What each "
        "method does: [Strategies](../strategies.md) and [Methods](../methods.md).", "",
        "| strategy | in one line |", "|---|---|",
        *(f"| [`{n}`](#{n}) | {_cell(s.summary)} |"
          for n, s in specs.items()), "",
    ]
    return "\n".join(head) + "\n" + "\n".join(strategy_section(s) for s in specs.values())


def on_files(files: Any, config: Any) -> Any:
    """MkDocs hook: add the generated strategies reference to the site's files."""
    from mkdocs.structure.files import File

    files.append(File.generated(config, PAGE, content=strategies_page()))
    return files
