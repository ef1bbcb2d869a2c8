"""The matrix file, validated by pydantic, and its cells; one import path for all of it.

The pieces, each a module of this package (none imports the package itself, so there is no
import circle): :mod:`~benchmarks.config.schema` (the sections of a matrix and their rules),
:mod:`~benchmarks.config.yaml_io` (lrbench's one bounded YAML reader),
:mod:`~benchmarks.config.overrides` (``--set`` and the one-line form of a validation
error), :mod:`~benchmarks.config.matrix_file` (file -> overrides -> schema -> registry
checks) and :mod:`~benchmarks.config.cells` (a matrix expanded into hashed cells).
"""

from benchmarks.config.cells import (
    HASH_VERSION,
    Cell,
    expand_cells,
    first_loop_target,
    resolved_hparams,
    resolved_yaml,
    scenario_dict,
    strategy_entry,
)
from benchmarks.config.matrix_file import (
    check_names,
    check_trunk,
    load_config,
    parse_config,
    read_matrix,
)
from benchmarks.config.overrides import _format_error, blame, set_override
from benchmarks.config.schema import (
    RUN_ONLY_SECTIONS,
    SAFE_NAME,
    SAFE_NAME_HELP,
    SEED_MAX,
    CacheSpec,
    EvaluationSpec,
    Float,
    Int,
    LoggingSpec,
    MatrixConfig,
    ModelSpec,
    SafeName,
    ScenarioSpec,
    Seed,
    SlurmSpec,
    TrackingSpec,
    TrainingSpec,
    _device,
    _Strict,
    case_collisions,
    is_safe_name,
)
from benchmarks.config.yaml_io import (
    MAX_BYTES,
    MAX_DEPTH,
    MAX_NODES,
    MatrixFileError,
    _StrictLoader,
    parse_yaml,
    read_yaml,
)
from benchmarks.schedule import MAX_CLASSES, MAX_EXPERIENCES, check_schedule

__all__ = [
    "HASH_VERSION", "MAX_BYTES", "MAX_CLASSES", "MAX_DEPTH", "MAX_EXPERIENCES", "MAX_NODES",
    "RUN_ONLY_SECTIONS", "SAFE_NAME", "SAFE_NAME_HELP", "SEED_MAX", "CacheSpec", "Cell",
    "EvaluationSpec", "Float", "Int", "LoggingSpec", "MatrixConfig", "MatrixFileError",
    "ModelSpec", "SafeName", "ScenarioSpec", "Seed", "SlurmSpec", "TrackingSpec",
    "TrainingSpec", "_Strict", "_StrictLoader", "_device", "_format_error", "blame",
    "case_collisions", "check_names", "check_schedule", "check_trunk", "expand_cells",
    "first_loop_target", "is_safe_name", "load_config", "parse_config", "parse_yaml",
    "read_matrix", "read_yaml", "resolved_hparams", "resolved_yaml", "scenario_dict",
    "set_override", "strategy_entry",
]
