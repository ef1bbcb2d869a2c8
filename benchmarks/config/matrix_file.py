"""Reading a matrix file: YAML -> ``--set`` overrides -> the schema's validation -> the registry
checks (strategy names, hyperparameters, trunks, losses), each problem one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import (
    ValidationError,
)

from benchmarks.config.cells import strategy_entry
from benchmarks.config.overrides import _format_error, blame, set_override
from benchmarks.config.schema import MatrixConfig, TrainingSpec
from benchmarks.config.yaml_io import read_yaml
from benchmarks.errors import LrbenchError, closest


def load_config(path: str | Path, overrides: list[str] | None = None,
                registries: bool = True) -> MatrixConfig:
    """Read and validate a matrix file; every problem is a one-line ``LrbenchError``.

    The file must be UTF-8 text of at most :data:`MAX_BYTES`, nested at most
    :data:`MAX_DEPTH` levels, holding at most :data:`MAX_NODES` values once its aliases
    are expanded (see :class:`_StrictLoader`). A value that ``overrides`` (``--set``) wrote
    is blamed on its flag, not on the file.

    ``registries=False`` skips the registry checks (strategy names and hyperparameters,
    which import every strategy and Avalanche): call :func:`check_names` later."""
    return parse_config(read_matrix(path, overrides), str(path), registries, overrides)


def read_matrix(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """A matrix file's raw mapping with ``--set`` ``overrides`` applied, not yet validated
    (``lrbench tune`` writes a matrix derived from it); a one-line error when it is not a
    readable YAML mapping."""
    path = Path(path)
    try:
        data = read_yaml(path, "matrix file")
    except FileNotFoundError:
        raise LrbenchError(f"matrix file {str(path)!r} not found; see configs/ for examples"
                           ) from None
    if not isinstance(data, dict):
        raise LrbenchError(f"{path}: a matrix file is a YAML mapping (name, seeds, ...)")
    for assignment in overrides or []:
        set_override(data, assignment)
    return data


def parse_config(data: dict[str, Any], source: str = "config",
                 registries: bool = True, overrides: list[str] | None = None) -> MatrixConfig:
    """Validate a raw mapping, then (unless told not to) check names against the registries.

    ``overrides``: the ``--set`` assignments already applied to ``data`` (an error in a
    value one of them wrote names that flag instead of ``source``)."""
    try:
        config = MatrixConfig.model_validate(data)
    except ValidationError as exc:
        raise _format_error(exc, source, overrides) from None
    if registries:
        check_names(config, source, overrides)
    return config


def check_trunk(trunk: str, where: str) -> None:
    """A trunk name against the model's own list (``strategies.model.TRUNKS``) or timm's;
    a one-line ``LrbenchError`` starting with ``where`` otherwise."""
    from strategies.model import TIMM_PREFIX, TRUNKS, check_timm_name

    if trunk.startswith(TIMM_PREFIX):
        try:
            check_timm_name(trunk)
        except ValueError as exc:
            raise LrbenchError(f"{where}: {exc}") from None
    elif trunk not in TRUNKS:
        raise LrbenchError(f"{where}: unknown trunk {trunk!r}.{closest(trunk, TRUNKS)} Use one "
                           f"of {', '.join(TRUNKS)} or timm:<name> (pip install "
                           "'lrbench[timm]')")


def check_names(config: MatrixConfig, source: str = "config",
                overrides: list[str] | None = None) -> None:
    """Protocol and strategy names, strategy hyperparameters and per-strategy training
    overrides, against the registries (a one-line ``LrbenchError`` for the first problem;
    ``overrides``: the ``--set`` assignments applied, blamed for the values they wrote)."""
    from strategies import make_config
    from strategies.losses import METRIC_LOSSES
    from strategies.registry import StrategyError

    flags = overrides

    def choice(value: str, known: tuple[str, ...], where: str, what: str) -> None:
        if value not in known:
            raise LrbenchError(f"{blame(source, flags, where)}: {where}: unknown {what} "
                               f"{value!r}.{closest(value, known)} Use one of "
                               f"{', '.join(known)}")

    check_trunk(config.model.trunk, f"{blame(source, flags, 'model.trunk')}: model.trunk")
    if config.model.pretrained is True:  # a weights enum member, timm's pretrained config
        from strategies.weights import resolve

        try:
            resolve(config.model.trunk, config.model.weights)
        except ValueError as exc:
            raise LrbenchError(f"{blame(source, flags, 'model.weights')}: {exc}") from None
    choice(config.training.loss, METRIC_LOSSES, "training.loss", "metric loss")
    for name, params in config.strategies.items():
        src = blame(source, flags, f"strategies.{name}")
        if params is not None and not isinstance(params, dict):
            raise LrbenchError(f"{src}: strategies.{name}: give its hyperparameters as a "
                               f"mapping (or {{}}), got {params!r}")
        if (params or {}).get("training") is not None and not isinstance(
                params["training"], dict):
            raise LrbenchError(f"{src}: strategies.{name}.training: give training "
                               f"overrides as a mapping (e.g. {{lr: 0.001}}), got "
                               f"{params['training']!r}")
        base, params, overrides = strategy_entry(name, params)
        if not isinstance(overrides, dict):
            raise LrbenchError(f"{src}: strategies.{name}.training: give training "
                               f"overrides as a mapping, got {overrides!r}")
        if not isinstance(base, str):
            raise LrbenchError(f"{src}: strategies.{name}.strategy: give the name of a "
                               f"registered strategy, got {base!r}")
        try:
            make_config(base, params)
        except StrategyError as exc:
            where = f"strategies.{name}: " if base != name else ""
            raise LrbenchError(f"{src}: {where}{exc}") from None
        try:
            spec = TrainingSpec.model_validate({**config.training.model_dump(), **overrides})
        except ValidationError as exc:
            raise _format_error(exc, f"{src}: strategies.{name}.training",
                                model=TrainingSpec) from None
        choice(spec.loss, METRIC_LOSSES, f"strategies.{name}.training.loss", "metric loss")
