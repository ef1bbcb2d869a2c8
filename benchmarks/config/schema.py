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

import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)

from benchmarks.errors import LrbenchError
from benchmarks.schedule import check_schedule


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
