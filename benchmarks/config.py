"""The matrix file: one YAML naming scenarios x strategies x seeds, validated by pydantic.

```yaml
name: demo
seeds: [0, 1]
data_root: null            # default $LRBENCH_DATA
scenarios:
  - synth-ci               # a protocol name (lrbench list protocols)
  - name: cub-small        # or an inline spec
    dataset: cub200
    schedule: 50+5x10
model: {trunk: small_cnn, dim: 64, pool: avg}
training: {p: 8, k: 4, iterations: 40, optimizer: adam, lr: 0.002}
strategies:
  finetune: {}
  lwf: {lam: 1.0, training: {lr: 0.001}}    # hyperparameters + per-strategy overrides
  lwf-strong: {strategy: lwf, lam: 10.0}     # a variant: its own label, a registered strategy
evaluation: {ks: [1, 2, 4, 8], map_at_r: true, cross_model: false}
logging: {tensorboard: false, csv: false}   # Avalanche loggers into each cell's folder
tracking: {mlflow: false, uri: null, experiment: null}  # MLflow runs (benchmarks.run.tracking)
# (and wandb: true for W&B runs, benchmarks.run.wandb_tracking)
slurm: {partition: null, time_min: 60, cpus: null, gpus: null, mem_gb: null}  # --executor submitit
cache: {images: false, features: true, views: 2, dir: null}   # benchmarks.run.cache
```

Every cell (scenario, strategy, seed) resolves to a frozen :class:`Cell`; its hash (SHA-256 of
the canonical JSON) decides whether a finished result can be reused.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from benchmarks.errors import LrbenchError, closest
from metrics.errors import short_repr


class _Strict(BaseModel):
    """Unknown keys are errors; a validated section never changes afterwards."""

    # every real number of a matrix is finite: .inf or a --set 1e400 (read as the text
    # "1e400", then inf) is refused when the matrix is read, not by every cell later
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


#: names that become folder names (store, cell ids): no separator, no dot-only name, no
#: "__" (the cell id's separator, so ids cannot collide), bounded length; matched whole
#: (``re.fullmatch``: ``$`` alone would let a trailing newline through)
SAFE_NAME = r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}"
SAFE_NAME_HELP = ("letters, digits and . _ + - only, starting with a letter or digit, at most "
                  "64 characters, no '__'")


def is_safe_name(name: str) -> bool:
    """Whether ``name`` may become a folder name of the store (see :data:`SAFE_NAME`)."""
    return isinstance(name, str) and re.fullmatch(SAFE_NAME, name) is not None \
        and "__" not in name


def case_collisions(names: list[str]) -> list[str]:
    """The names of ``names`` that differ from another only in letter case (sorted): on a
    case-insensitive disk (macOS, Windows) their folders are one folder."""
    by_fold: dict[str, set[str]] = {}
    for name in names:
        by_fold.setdefault(str(name).casefold(), set()).add(str(name))
    return sorted(n for group in by_fold.values() if len(group) > 1 for n in group)


def _safe_name(name: str) -> str:
    if not is_safe_name(name):
        raise ValueError(f"{name[:80]!r} cannot name a folder: use {SAFE_NAME_HELP}")
    return name


SafeName = Annotated[str, AfterValidator(_safe_name)]


def _not_bool(value: Any) -> Any:
    """YAML's ``true``/``false`` are not numbers (pydantic would read ``iterations: true``
    as 1): refused wherever a number is expected."""
    if isinstance(value, bool):
        raise ValueError(f"give a number, not {str(value).lower()} (a yes/no value)")
    return value


#: an integer / a real number that refuses booleans (see :func:`_not_bool`)
Int = Annotated[int, BeforeValidator(_not_bool)]
Float = Annotated[float, BeforeValidator(_not_bool)]
#: seeds and fixed class orders seed NumPy's legacy generator: 0 <= seed < 2**32
SEED_MAX = 2**32 - 1
Seed = Annotated[int, BeforeValidator(_not_bool), Field(ge=0, le=SEED_MAX)]
#: the most experiences a schedule may list, and classes one experience may hold
MAX_EXPERIENCES = 10_000
MAX_CLASSES = 1_000_000


def check_schedule(schedule: str | list[int]) -> str | list[int]:
    """A schedule's syntax and sizes, checked without building anything (its class counts
    are parsed again by ``benchmarks.streams.parse_schedule``): a ValueError for a bad
    one, before ``10000000000x1`` could ask for ten billion experiences."""
    if isinstance(schedule, str):
        counts = []
        for term in schedule.replace(" ", "").split("+"):
            m = re.match(r"^(?:(\d+)x)?(\d+)$", term)
            if not m:
                raise ValueError(f"bad schedule {schedule[:40]!r}: write it as B+NxM (e.g. "
                                 "100+4x25), B+C (e.g. 100+100) or a list of class counts")
            counts.append(tuple(int(g[-12:]) if len(g) <= 12 else 10**12
                                for g in (m.group(1) or "1", m.group(2))))
    else:
        counts = [(1, c) for c in schedule]
    if sum(n for n, _ in counts) > MAX_EXPERIENCES:
        raise ValueError(f"schedule {str(schedule)[:40]!r} has more than {MAX_EXPERIENCES:,} "
                         "experiences; give fewer")
    if any(c > MAX_CLASSES for _, c in counts):
        raise ValueError(f"schedule {str(schedule)[:40]!r} has an experience of more than "
                         f"{MAX_CLASSES:,} classes; give fewer")
    if not counts or any(c < 1 or n < 1 for n, c in counts):
        raise ValueError(f"bad schedule {str(schedule)[:40]!r}: every experience needs at "
                         "least one class")
    return schedule


def _device(name: str) -> str:
    """``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (whether this host has it is checked
    before training, ``benchmarks.run.preflight.check_devices``)."""
    if not re.match(r"^(cpu|cuda(:\d{1,2})?|mps)$", name):
        raise ValueError(f"unknown device {name[:40]!r}; use cpu, cuda, cuda:N or mps")
    return name


class ScenarioSpec(_Strict):
    """A stream: class-incremental over ``dataset`` or lifelong over ``datasets``.

    A named protocol (``lrbench list protocols``) is the same thing with preset fields: the
    matrix may name it (``- cub-subset-50+5x10``) or start from it and change any field
    (``- {protocol: cub-subset-50+5x10, validation: 0.2}``); either way it resolves here,
    when the matrix is loaded, into this one type.

    ``order``: ``seed`` (the default) draws the class order from each cell's seed, so the
    spread over seeds includes the order's; ``sorted`` keeps class-id order (thesis-faithful
    runs: sorted CUB ids are taxonomic blocks); an integer fixes one seeded permutation.
    """

    name: SafeName
    dataset: str | None = None
    schedule: Annotated[str | list[Int], AfterValidator(check_schedule)] | None = None
    datasets: list[str] | None = None
    order: Literal["sorted", "seed"] | Seed = "seed"
    image_size: Int = Field(224, ge=16, le=4096)
    dataset_kwargs: dict[str, Any] = Field(default_factory=dict)
    validation: Float | None = Field(
        None, gt=0, lt=1, description="evaluate on this fraction of each class's train "
        "images, held out, instead of the test split (for tuning hyperparameters)")

    @model_validator(mode="before")
    @classmethod
    def _from_protocol(cls, data: Any) -> Any:
        if isinstance(data, str):
            data = {"protocol": data}
        if not isinstance(data, dict) or "protocol" not in data:
            return data
        from benchmarks.protocols import get_protocol

        given = dict(data)
        name = given.pop("protocol")
        if not isinstance(name, str):
            raise ValueError(f"protocol: give a protocol name, got {name!r}")
        return {**get_protocol(name).spec(), **given}

    @model_validator(mode="after")
    def _one_kind(self) -> ScenarioSpec:
        if (self.dataset is None) == (self.datasets is None):
            raise ValueError("give either dataset (with schedule) or datasets (lifelong)")
        if self.dataset is not None and self.schedule is None:
            raise ValueError("a class-incremental scenario needs a schedule, e.g. 50+5x10")
        return self


def _trunk_form(name: str) -> str:
    if name.startswith("timm:") and len(name) == len("timm:"):
        raise ValueError("give the timm model after the prefix, e.g. timm:resnet18")
    return name


class ModelSpec(_Strict):
    """The embedding network (strategies.model.EmbeddingNet).

    ``pretrained``: ``true`` loads the trunk's ImageNet weights the way torchvision and timm
    do (their caches, else their hash-checked downloads, fetched once before any training:
    :mod:`strategies.weights`); ``weights`` picks a torchvision trunk's member of
    torchvision's weights enum (default: the model's ``DEFAULT``; ``mobilenet_v2``:
    ``IMAGENET1K_V1``, the file lrbench always used). A path loads that local file; a
    ``timm:<name>`` trunk's local file is given as ``PATH#sha256=HEX``.
    """

    trunk: Annotated[str, AfterValidator(_trunk_form)] = Field(
        "small_cnn", description="a built-in trunk (strategies.model.TRUNKS) or timm:<name>; "
        "checked against the model's own list with the strategies (check_names)")
    dim: Int = Field(512, ge=2, le=65536)
    pool: Literal["max", "avg"] = "max"
    pretrained: bool | str = False
    freeze_bn: bool = False
    frozen_stages: Int = Field(0, ge=0, le=10_000, description="leading trunk stages that "
                               "never train (fewer than the trunk's stages: checked before "
                               "training, benchmarks.run.preflight.check_models)")
    weights: str | None = Field(
        None, description="with pretrained: true, a member of a torchvision trunk's weights "
        "enum (IMAGENET1K_V1, IMAGENET1K_V2, DEFAULT; checked with the strategies)")

    #: settings a cell's hash leaves out while they have their default value (see
    #: :attr:`TrainingSpec.HASH_OMITS_DEFAULT`)
    HASH_OMITS_DEFAULT: ClassVar[tuple[str, ...]] = ("weights",)

    def hashed_dump(self) -> dict[str, Any]:
        """``model_dump()`` less the :data:`HASH_OMITS_DEFAULT` settings at their default."""
        out = self.model_dump()
        for key in self.HASH_OMITS_DEFAULT:
            if out[key] == type(self).model_fields[key].default:
                del out[key]
        return out

    def weights_identity(self) -> dict[str, Any] | None:
        """The name and file (with the SHA-256 prefix its name promises) of the weights
        ``pretrained: true`` loads, for a cell's hash: None where the config already names
        them as stores before this setting did (no weights, a path, ``mobilenet_v2`` with
        ``pretrained: true``), so those cells keep their hashes."""
        from strategies.weights import is_legacy, resolve

        if is_legacy(self.trunk, self.pretrained, self.weights):
            return None
        try:
            return resolve(self.trunk, self.weights).identity()
        except ValueError as exc:
            raise LrbenchError(f"model: {exc}") from None

    @model_validator(mode="after")
    def _timm_weights(self) -> ModelSpec:
        if self.trunk == "small_cnn" and self.pretrained is not False:
            raise ValueError(f"pretrained: {self.pretrained!r}: the small_cnn trunk has no "
                             "pretrained weights (it trains from scratch); remove pretrained "
                             "or choose a trunk that has them, e.g. mobilenet_v2")
        if self.trunk.startswith("timm:") and self.pretrained and self.pretrained is not True:
            from strategies.model import parse_pretrained

            parse_pretrained(self.pretrained)
        if self.weights is not None and (self.pretrained is not True or self.trunk not in (
                "resnet18", "resnet50", "googlenet", "mobilenet_v2")):
            raise ValueError("weights chooses a torchvision trunk's ImageNet weights: give it "
                             "with pretrained: true and trunk resnet18, resnet50, googlenet or "
                             f"mobilenet_v2 (got trunk {self.trunk!r}, pretrained "
                             f"{self.pretrained!r})")
        return self


class TrainingSpec(_Strict):
    """Batches, budget and optimizer (strategies.template.RetrievalTemplate)."""

    p: Int = Field(16, ge=2, le=100_000, description="classes per batch")
    k: Int = Field(5, ge=2, le=100_000, description="images per class in a batch")
    iterations: Int | None = Field(100, ge=1, le=10**9)
    epochs: Float | None = Field(None, gt=0, le=1e6, allow_inf_nan=False)
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: Float = Field(1e-3, gt=0, allow_inf_nan=False)
    trunk_lr_mult: Float = Field(
        1.0, gt=0, le=1000, allow_inf_nan=False, description="learning rate of the trunk's "
        "trained layers relative to lr (the projection, classifier and a loss's proxies keep "
        "lr): below 1 a pretrained trunk learns slowly under a faster new head (SLCA's slow "
        "learner)")
    weight_decay: Float = Field(0.0, ge=0, allow_inf_nan=False)
    momentum: Float = Field(0.9, ge=0, lt=1)
    loss: str = Field("hard_mining", description="a metric loss of "
                      "strategies.losses.METRIC_LOSSES (checked there, with the strategies)")
    margin: Float = Field(0.1, ge=0, allow_inf_nan=False)
    eval_mb_size: Int = Field(128, ge=1, le=100_000)
    device: Annotated[str, AfterValidator(_device)] = "cpu"
    threads: Int = Field(
        1, ge=1, le=256, description="intra-op torch threads of a cell: its numbers depend "
        "on it (a float sum split over threads adds in another order), so it is fixed per "
        "cell, never derived from the host or --jobs")
    max_grad_norm: Float | None = Field(
        1e4, gt=0, description="a larger gradient norm fails the cell (exploding gradient)")
    amp: bool = Field(
        False, description="mixed precision (bfloat16 autocast) on a CUDA device; inactive "
        "on CPU, with a one-line note")
    channels_last: bool = Field(
        False, description="channels-last (NHWC) model and images, on any device (on this "
        "project's CPU it took 30% off a MobileNetV2 training step); numbers equal up to "
        "float rounding")

    #: settings a cell's hash leaves out while they have their default value: added after
    #: stores existed, so the cells those stores hold keep their hashes and are reused
    HASH_OMITS_DEFAULT: ClassVar[tuple[str, ...]] = ("amp", "channels_last", "trunk_lr_mult")

    def hashed_dump(self) -> dict[str, Any]:
        """``model_dump()`` less the :data:`HASH_OMITS_DEFAULT` settings at their default."""
        out = self.model_dump()
        for key in self.HASH_OMITS_DEFAULT:
            if out[key] == type(self).model_fields[key].default:
                del out[key]
        return out

    @model_validator(mode="before")
    @classmethod
    def _epochs_replace_iterations(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("epochs") is not None:
            data = {**data, "iterations": None}  # an epoch budget replaces the default
        return data

    @model_validator(mode="after")
    def _one_budget(self) -> TrainingSpec:
        if self.iterations is None and self.epochs is None:
            raise ValueError("give a budget: iterations or epochs")
        return self


class EvaluationSpec(_Strict):
    """What is measured after each experience."""

    ks: list[Int] = Field(default_factory=lambda: [1, 2, 4, 8], min_length=1)
    map_at_r: bool = True
    cross_model: bool = False
    never_reindexed: bool = Field(
        True, description="also score the gallery a deployed search holds: each "
        "experience's test images embedded once, by the model after that experience, and "
        "never re-embedded (metrics.gallery); with the negative-flip rate")
    compatibility: bool = Field(
        True, description="the pairwise compatibility matrix of the models after each "
        "experience and its summaries (metrics.compatibility)")

    #: settings a cell's hash leaves out while they have their default value (see
    #: :attr:`TrainingSpec.HASH_OMITS_DEFAULT`): they change no number of the rest
    HASH_OMITS_DEFAULT: ClassVar[tuple[str, ...]] = ("never_reindexed", "compatibility")

    def hashed_dump(self) -> dict[str, Any]:
        """``model_dump()`` less the :data:`HASH_OMITS_DEFAULT` settings at their default."""
        out = self.model_dump()
        for key in self.HASH_OMITS_DEFAULT:
            if out[key] == type(self).model_fields[key].default:
                del out[key]
        return out

    @model_validator(mode="after")
    def _positive(self) -> EvaluationSpec:
        if min(self.ks) <= 0:
            raise ValueError("every K must be a positive integer")
        return self


class LoggingSpec(_Strict):
    """Avalanche loggers written into each cell's folder (local executor only).

    They do not change any number, so they are not part of a cell's config hash.
    Avalanche's CSVLogger keeps only Avalanche's own metrics (not Recall@K): the store's
    result.json and results.csv hold those.
    """

    tensorboard: bool = False
    csv: bool = False


class TrackingSpec(_Strict):
    """MLflow tracking of the run (:mod:`benchmarks.run.tracking`): one parent run per
    matrix, one child run per cell, logged by the process that owns the store.

    ``uri`` is an MLflow tracking URI (``sqlite:///PATH``, ``http(s)://HOST``) or a plain
    folder (default ``mlruns``, relative to the working folder), which holds a SQLite
    database ``mlflow.db`` and the artifacts. ``experiment`` defaults to the matrix name.
    Tracking computes nothing, so it is part of no cell's hash and a store does not hold
    "another matrix" when only this section changed.
    """

    mlflow: bool = False
    uri: str | None = None
    experiment: str | None = None
    wandb: bool = Field(False, description="also log each cell as a Weights & Biases run "
                        "(benchmarks.run.wandb_tracking; pip install 'lrbench[wandb]')")
    wandb_project: str | None = Field(None, description="W&B project (default: the matrix "
                                      "name)")
    wandb_entity: str | None = Field(None, description="W&B entity (default: W&B's own)")


class SlurmSpec(_Strict):
    """What each cell's job asks of a SLURM cluster under ``--executor submitit``.

    ``cluster: slurm`` submits with ``sbatch`` (refused where SLURM is absent: no
    ``srun``); ``local`` runs the same jobs as local processes through submitit's local
    executor (tests, laptops).
    ``cpus`` defaults to the cells' ``training.threads``, ``gpus`` to 1 for CUDA cells.
    ``folder`` (default ``<store>/submitit``) holds submitit's pickles and job logs: on a
    cluster it must be on a disk the compute nodes share. Not part of any cell's hash.
    """

    cluster: Literal["slurm", "local"] = "slurm"
    partition: str | None = None
    time_min: Int = Field(60, ge=1, description="wall-clock limit of one cell's job")
    cpus: Int | None = Field(None, ge=1)
    gpus: Int | None = Field(None, ge=0)
    mem_gb: Float | None = Field(None, gt=0)
    array_parallelism: Int = Field(256, ge=1, description="jobs of the array run at once")
    folder: str | None = None


#: sections that change no number: left out when a store's matrix is compared with a rerun's
RUN_ONLY_SECTIONS = ("tracking", "slurm", "tuned_on_seeds")


class CacheSpec(_Strict):
    """The caches of ``benchmarks.run.cache`` (real images; they change augmentation, so
    ``images``, ``features`` and ``views`` are part of a cell's hash, ``dir`` is not).

    ``features`` applies when ``model.frozen_stages > 0``: the stem's outputs are computed
    once per image and view, and training sees one of ``views`` fixed crops per image.
    """

    images: bool = False
    features: bool = True
    views: Int = Field(2, ge=1, le=16)
    dir: str | None = None


class MatrixConfig(_Strict):
    """A whole matrix file."""

    name: SafeName
    seeds: list[Seed] = Field(min_length=1)
    data_root: str | None = None
    scenarios: list[ScenarioSpec] = Field(min_length=1)
    model: ModelSpec = Field(default_factory=ModelSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    strategies: dict[str, dict[str, Any]] = Field(min_length=1)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    logging: LoggingSpec = Field(default_factory=LoggingSpec)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    slurm: SlurmSpec = Field(default_factory=SlurmSpec)
    cache: CacheSpec = Field(default_factory=CacheSpec)
    tuned_on_seeds: list[Seed] = Field(
        default_factory=list, description="the seeds whose validation runs chose this "
        "matrix's hyperparameters (lrbench tune writes it into tuned.yaml): lrbench run "
        "refuses a matrix whose seeds reuse one of them, unless --allow-tuning-seeds")

    def tuning_seed_overlap(self) -> list[int]:
        """The seeds of this matrix that also tuned its hyperparameters (sorted)."""
        return sorted(set(self.seeds) & set(self.tuned_on_seeds))


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


def strategy_entry(name: str, params: dict[str, Any] | None
                   ) -> tuple[str, dict[str, Any], Any]:
    """A ``strategies`` entry split into (the registered strategy it runs: ``strategy:``, or
    its own name; its hyperparameters; its ``training:`` overrides)."""
    params = dict(params or {})
    overrides = params.pop("training", None) or {}
    return params.pop("strategy", name), params, overrides


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


def scenario_dict(sc: ScenarioSpec) -> dict[str, Any]:
    """A scenario as a plain, hashable description."""
    out = {"name": sc.name, **sc.model_dump(exclude={"name"})}
    if out["validation"] is None:  # left out when unset
        del out["validation"]
    return out


def resolved_hparams(strategy: str, params: dict[str, Any]) -> dict[str, Any]:
    """A strategy's hyperparameters with its defaults filled in (``fecd: {}`` and ``fecd:
    {lam: 10.0}`` are the same run, so the same cell), as plain JSON values."""
    from strategies import make_config
    from strategies.registry import StrategyError

    try:
        return make_config(strategy, params).resolved()
    except StrategyError as exc:
        raise LrbenchError(str(exc)) from None


#: the version of what a cell's hash covers; bump it when the same config would compute
#: other numbers (2: hyperparameters resolved with their defaults, training.threads, class
#: order drawn per seed, protocols resolved into their fields, per-experience loss terms)
HASH_VERSION = 2


class Cell(_Strict):
    """One (scenario, strategy, seed) of a matrix, fully resolved: the training settings
    with the strategy's overrides applied, its hyperparameters with their defaults filled
    in. Frozen: what a cell is decides its :attr:`hash`, so it never changes once made
    (leaving broken files out makes another cell, :meth:`without_files`).

    ``strategy`` is the matrix's label (it names the cell); ``plugin`` the registered
    strategy a variant runs (None: the label itself, :attr:`plugin_name`).
    """

    scenario: ScenarioSpec
    strategy: str
    plugin: str | None = None
    hparams: dict[str, Any]
    seed: int
    model: ModelSpec
    training: TrainingSpec
    evaluation: EvaluationSpec
    cache: CacheSpec
    data_root: str | None = None
    skip_files: dict[str, list[str]] | None = Field(
        None, description="--skip-corrupt: dataset -> broken files left out of this cell")

    @property
    def id(self) -> str:
        """The cell's name, and its folder in the store (unique: names hold no ``__``)."""
        return f"{self.scenario.name}__{self.strategy}__seed{self.seed}"

    @property
    def plugin_name(self) -> str:
        """The registered strategy this cell runs."""
        return self.plugin or self.strategy

    def as_dict(self) -> dict[str, Any]:
        """The cell as the plain mapping ``result.json`` stores (``config``); its keys and
        shape are those of every store written since hash version 2."""
        return {**self._body(), "id": self.id, "hash": self.hash}

    def _body(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "scenario": scenario_dict(self.scenario), "strategy": self.strategy,
            "hparams": self.hparams, "seed": self.seed, "model": self.model.hashed_dump(),
            "training": self.training.hashed_dump(),
            "evaluation": self.evaluation.hashed_dump(),
            "cache": self.cache.model_dump(exclude={"dir"}),
            "data_root": self.data_root, "cache_dir": self.cache.dir,
        }
        if self.plugin is not None:  # a variant: its label names the cell, this the plugin
            out["plugin"] = self.plugin
        weights = self.model.weights_identity()
        if weights is not None:  # pretrained: true on a trunk that had no such weights
            out["weights"] = weights
        if self.skip_files:
            out["skip_files"] = self.skip_files
        return out

    @property
    def hash(self) -> str:
        """SHA-256 (first 16 hex digits) of the cell's canonical JSON and
        :data:`HASH_VERSION`: a finished result with this hash is this cell's result.

        Its id is left out, and so are the data root and the cache folder: the same data at
        another path gives the same numbers, so moving it invalidates no finished cell.
        """
        return _digest({k: v for k, v in self._body().items()
                        if k not in ("data_root", "cache_dir")})

    @property
    def first_experience_key(self) -> str:
        """What decides this cell's state at the end of its first experience, hashed: its
        :attr:`hash` with the strategy named by its plugin (a label changes no number) and
        without the hyperparameters its plugin declares inactive there
        (``inactive_in_first_experience``). Cells with one key may train that experience
        once and share it (:mod:`benchmarks.runner`)."""
        from strategies import get_strategy

        idle = get_strategy(self.plugin_name).inactive_in_first_experience
        body = {k: v for k, v in self._body().items()
                if k not in ("data_root", "cache_dir", "plugin")}
        body["strategy"] = self.plugin_name
        body["hparams"] = {k: v for k, v in self.hparams.items() if k not in idle}
        return _digest(body, "first-experience:")

    def without_files(self, skips: dict[str, list[str]]) -> Cell:
        """This cell leaving the ``skips`` files out: another cell, with its own hash."""
        return self.model_copy(update={"skip_files": skips or None})

    @classmethod
    def from_stored(cls, config: dict[str, Any]) -> Cell:
        """A cell from the ``config`` mapping of a ``result.json`` (:meth:`as_dict`)."""
        data = {k: v for k, v in config.items()
                if k not in ("id", "hash", "cache_dir", "weights")}  # weights: derived
        data["cache"] = {**(data.get("cache") or {}), "dir": config.get("cache_dir")}
        return cls.model_validate(data)


def _digest(body: dict[str, Any], prefix: str = "") -> str:
    """SHA-256 (first 16 hex digits) of ``prefix`` and ``body``'s canonical JSON with
    :data:`HASH_VERSION` (a cell's hash, its first-experience key)."""
    text = json.dumps({**body, "hash_version": HASH_VERSION}, sort_keys=True,
                      separators=(",", ":"), default=str)
    return hashlib.sha256(f"{prefix}{text}".encode()).hexdigest()[:16]


def expand_cells(config: MatrixConfig) -> list[Cell]:
    """Every (scenario, strategy, seed) cell, fully resolved (training settings and the
    strategy's hyperparameters with their defaults). Ids are unique by construction (names
    cannot hold ``__``); a repeated scenario name or seed is a one-line error."""
    for what, names in (("scenario name", [sc.name for sc in config.scenarios]),
                        ("seed", config.seeds)):
        twice = sorted({str(n) for n in names if names.count(n) > 1})
        if twice:
            raise LrbenchError(f"{what} {', '.join(twice)} appears twice in the matrix; each "
                               f"{what} must be unique (its cells would be the same cells)")
    for name in config.strategies:
        if not is_safe_name(name):
            raise LrbenchError(f"strategy label {name!r} cannot name a cell folder: use "
                               f"{SAFE_NAME_HELP}")
    for what, names in (("scenario names", [sc.name for sc in config.scenarios]),
                        ("strategy labels", list(config.strategies))):
        same = case_collisions(names)
        if same:
            raise LrbenchError(f"{what} {', '.join(map(repr, same))} differ only in letter "
                               "case: on a case-insensitive disk (macOS, Windows) their cell "
                               "folders are one folder, and each run would overwrite the "
                               "other's results; rename one of them")
    cells = []
    for sc in config.scenarios:
        for name, params in config.strategies.items():
            base, params, overrides = strategy_entry(name, params)
            hparams = resolved_hparams(base, params)
            training = TrainingSpec.model_validate(
                {**config.training.model_dump(), **overrides})
            for seed in config.seeds:
                cells.append(Cell(
                    scenario=sc, strategy=name, plugin=base if base != name else None,
                    hparams=hparams, seed=seed, model=config.model, training=training,
                    evaluation=config.evaluation, cache=config.cache,
                    data_root=config.data_root))
    return cells


def resolved_yaml(config: MatrixConfig, run_only: bool = True) -> str:
    """The matrix as it will run (defaults filled in), for the store; ``run_only=False``
    leaves out the sections that change no number (:data:`RUN_ONLY_SECTIONS`)."""
    data = copy.deepcopy(config.model_dump(mode="json"))
    if not run_only:
        for key in RUN_ONLY_SECTIONS:
            data.pop(key, None)
    return yaml.safe_dump(data, sort_keys=False)
