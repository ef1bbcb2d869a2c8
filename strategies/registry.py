"""The strategy registry: a strategy becomes available by registering a name, nothing else.

A strategy is an Avalanche plugin class with a nested ``Config`` (a pydantic model of its
hyperparameters, declared once, typed and validated) decorated with
:func:`register_strategy`. External packages register theirs through the entry point group
``lrbench.strategies`` (the entry point names a module to import or the class itself)::

    [project.entry-points."lrbench.strategies"]
    my_method = "my_package.my_method"

Built-in strategies live one per file in this package; ``strategies/__init__.py`` imports
every module of the package except the infrastructure ones it names, so a file dropped
into the folder registers by being there.

An entry point that fails to import does not break the others: the failure is recorded,
:func:`available_strategies` warns once on stderr, and only :func:`get_strategy` for that
name raises (a matrix that does not use it runs).
"""

from __future__ import annotations

import difflib
import importlib.metadata
import sys
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from metrics.errors import LrbenchError
from strategies.tunables import (  # noqa: F401 (re-exported: strategies.registry.*)
    Choice,
    IntRange,
    LogUniform,
    Tunable,
    Uniform,
    tunable_problems,
)

ENTRY_POINT_GROUP = "lrbench.strategies"


class StrategyError(LrbenchError):
    """A user error about strategies (unknown name, bad hyperparameter, a plugin package
    that fails to import): one line, exit code 2 on the command line, like every
    :class:`~metrics.errors.LrbenchError`."""


class StrategyConfig(BaseModel):
    """Base of every strategy's hyperparameters: unknown keys are errors, values typed.

    ``hash_omits_default`` names hyperparameters added after results were stored whose
    default computes exactly what the strategy computed before they existed: at their
    default they are left out of a cell's resolved hyperparameters (so of its hash), and
    stores written before them still resume. Set one only with a test that the default
    gives the old numbers."""

    # every real-valued hyperparameter is finite: ``lam: .inf`` (or ``--set ...=1e400``,
    # read as text, then inf) is refused when the matrix is read, not by every cell later
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    hash_omits_default: ClassVar[frozenset[str]] = frozenset()

    def resolved(self) -> dict[str, Any]:
        """Every hyperparameter as plain JSON values, less those at their default that
        :attr:`hash_omits_default` names: what a cell records and hashes."""
        out = self.model_dump(mode="json")
        for name in self.hash_omits_default:
            if getattr(self, name) == type(self).model_fields[name].default:
                out.pop(name, None)
        return out


@dataclass(frozen=True)
class StrategySpec:
    """A registered strategy: its plugin class and where it came from."""

    name: str
    cls: type
    source: str = "builtin"
    #: the distribution that provides it (``lrbench`` for the built-ins) and its version
    package: str = "lrbench"
    version: str = ""

    def provenance(self) -> dict[str, str]:
        """Where this strategy's code came from, as ``result.json`` records it: the
        package and its version, and how it was registered."""
        version = self.version
        if not version:
            try:
                version = importlib.metadata.version(self.package)
            except importlib.metadata.PackageNotFoundError:
                version = "unknown"
        return {"strategy": self.name, "package": self.package, "version": version,
                "source": self.source}

    @property
    def config_cls(self) -> type[StrategyConfig]:
        """The pydantic model of the hyperparameters."""
        return self.cls.Config

    @property
    def summary(self) -> str:
        """First line of the plugin's docstring."""
        return (self.cls.__doc__ or "").strip().splitlines()[0] if self.cls.__doc__ else ""

    def hyperparameters(self) -> list[dict[str, Any]]:
        """Name, type, default and description of every hyperparameter."""
        out = []
        for name, field in self.config_cls.model_fields.items():
            ann = field.annotation
            if typing.get_origin(ann) is typing.Literal:
                kind = "one of " + ", ".join(map(str, typing.get_args(ann)))
            else:
                kind = getattr(ann, "__name__", str(ann).replace("typing.", ""))
            out.append({
                "name": name,
                "type": kind,
                # a default factory (``on_params``) leaves ``field.default`` undefined
                "default": field.get_default(call_default_factory=True),
                "description": field.description or "",
            })
        return out

    @property
    def tunables(self) -> dict[str, Tunable]:
        """The hyperparameters ``lrbench tune`` searches, with their ranges."""
        return dict(getattr(self.cls, "tunable", {}) or {})

    def describe(self) -> dict[str, Any]:
        """JSON-ready description (``lrbench list strategies --json``)."""
        prov = self.provenance()
        return {"name": self.name, "summary": self.summary, "source": self.source,
                "package": prov["package"], "version": prov["version"],
                "hyperparameters": self.hyperparameters(),
                "tunable": {k: v.describe() for k, v in self.tunables.items()},
                "inactive_in_first_experience": sorted(self.inactive_in_first_experience)}

    @property
    def inactive_in_first_experience(self) -> frozenset[str]:
        """Hyperparameters that change nothing in the first experience (see
        :attr:`StrategyPlugin.inactive_in_first_experience`)."""
        return frozenset(getattr(self.cls, "inactive_in_first_experience", ()) or ())


_REGISTRY: dict[str, StrategySpec] = {}
_entry_points_loaded = False
#: entry points that failed to load: name -> the one-line error ``get_strategy`` raises
_BROKEN: dict[str, str] = {}


def register_strategy(name: str, source: str = "builtin"):
    """Class decorator: make a plugin class available under ``name``."""

    def decorate(cls: type) -> type:
        config = getattr(cls, "Config", None)
        if not (isinstance(config, type) and issubclass(config, StrategyConfig)):
            raise TypeError(f"strategy {name!r}: {cls.__name__}.Config must subclass "
                            "StrategyConfig")
        existing = _REGISTRY.get(name)
        reloaded = existing is not None and (existing.cls.__module__, existing.cls.__qualname__) \
            == (cls.__module__, cls.__qualname__)
        if existing is not None and existing.cls is not cls and not reloaded:
            raise ValueError(f"strategy name {name!r} is already registered by "
                             f"{existing.cls.__module__}.{existing.cls.__qualname__}")
        unknown = sorted(set(getattr(cls, "inactive_in_first_experience", ())) -
                         set(config.model_fields))
        if unknown:
            raise TypeError(f"strategy {name!r}: inactive_in_first_experience names "
                            f"{', '.join(unknown)}, not hyperparameters of its Config")
        cls.strategy_name = name
        _REGISTRY[name] = StrategySpec(name, cls, source)
        return cls

    return decorate


def _load_entry_points() -> None:
    """Import every entry point of the group once; record (not raise) those that fail, and
    say so in one line on stderr per broken entry point."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plugin package must not hide the others
            error = " ".join(f"{type(exc).__name__}: {exc}".split())
            _BROKEN[ep.name] = (f"strategy entry point {ep.name!r} ({ep.value}) failed to "
                                f"load: {error}; fix or uninstall that package")
            print(f"lrbench: warning: {_BROKEN[ep.name]} (strategy {ep.name!r} is "
                  "unavailable)", file=sys.stderr)
            continue
        if isinstance(obj, type) and ep.name not in _REGISTRY:
            register_strategy(ep.name, source=f"entry point {ep.value}")(obj)
        spec = _REGISTRY.get(ep.name)
        if spec is not None and not spec.cls.__module__.startswith("strategies."):
            # registered by the decorator while its module was imported: say where from,
            # and which distribution (and version) provides it
            dist = getattr(ep, "dist", None)
            _REGISTRY[ep.name] = StrategySpec(
                ep.name, spec.cls, f"entry point {ep.value}",
                package=getattr(dist, "name", None) or "unknown",
                version=getattr(dist, "version", None) or "unknown")


#: strategy modules of the package that failed to import: module name -> the one-line
#: reason (a syntax error in a file dropped into ``strategies/`` must not break every
#: command: the others still work, and that name is refused in one line)
_BROKEN_MODULES: dict[str, str] = {}
_warned_modules = False


def record_broken_module(name: str, path: str, exc: BaseException) -> None:
    """Note that the strategy module ``name`` (file ``path``) failed to import with
    ``exc`` (:func:`available_strategies` warns once; :func:`get_strategy` refuses it)."""
    where = ""
    if isinstance(exc, SyntaxError) and exc.lineno:
        where = f" (line {exc.lineno})"
    error = " ".join(f"{type(exc).__name__}: {getattr(exc, 'msg', None) or exc}".split())
    _BROKEN_MODULES[name] = (f"strategy module {path} failed to import{where}: {error}; "
                             "fix or remove that file")


def available_strategies() -> dict[str, StrategySpec]:
    """Every registered strategy, entry-point ones included, by name (an entry point or a
    module of the package that fails to import is left out, with a one-line warning on
    stderr the first time)."""
    global _warned_modules
    import strategies  # noqa: F401  (registers the built-ins)

    if _BROKEN_MODULES and not _warned_modules:
        _warned_modules = True
        for name, error in _BROKEN_MODULES.items():
            print(f"lrbench: warning: {error} (strategy {name!r} is unavailable)",
                  file=sys.stderr)
    _load_entry_points()
    return dict(sorted(_REGISTRY.items()))


def get_strategy(name: str) -> StrategySpec:
    """The strategy called ``name``; an unknown name suggests the closest."""
    known = available_strategies()
    if name in known:
        return known[name]
    if name in _BROKEN:
        raise StrategyError(_BROKEN[name])
    if name in _BROKEN_MODULES:
        raise StrategyError(_BROKEN_MODULES[name])
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise StrategyError(f"unknown strategy {name!r}.{hint} Known: {', '.join(known)}. "
                        f"A strategy from another package comes through the entry point group "
                        f"{ENTRY_POINT_GROUP!r}: is that package installed?")


def derived_seed(seed: int, scale: int, offset: int) -> int:
    """``seed * scale + offset`` folded into NumPy's seed range 0..2**32 - 1: the seed of a
    generator derived from a run's seed (the P x K sampler of each experience, replay's
    exemplar draw). Identical to the plain sum wherever that fits (every seed below 42,949
    for the sampler, so stored cells keep their numbers), and valid for every seed a matrix
    accepts (up to 2**32 - 1; an odd ``scale`` maps distinct seeds to distinct values)."""
    return (int(seed) * int(scale) + int(offset)) % 2**32


def _takes_bool(annotation: Any) -> bool:
    """Whether a hyperparameter's type admits ``True``/``False`` (bool, Any, a union or
    literal holding one); a number's does not."""
    import typing

    if annotation is bool or annotation is Any or isinstance(annotation, bool):
        return True
    return any(_takes_bool(a) for a in typing.get_args(annotation))


def make_config(name: str, hparams: dict[str, Any] | None = None) -> StrategyConfig:
    """Validate ``hparams`` for strategy ``name``; a bad one is a one-line error."""
    spec = get_strategy(name)
    for key, value in (hparams or {}).items():  # pydantic would read true as 1
        field = spec.config_cls.model_fields.get(key)
        if isinstance(value, bool) and field is not None and not _takes_bool(field.annotation):
            choices = typing.get_args(field.annotation) if typing.get_origin(
                field.annotation) is typing.Literal else ()
            want = f"one of {', '.join(map(str, choices))}" if choices else "a number"
            raise StrategyError(f"strategy {name!r}: hyperparameter {key!r}: give {want}, not "
                                f"{str(value).lower()} (YAML reads yes/no/on/off as true/false: "
                                "quote a word meant as text)")
    try:
        return spec.config_cls(**(hparams or {}))
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ())) or "?"
        known = ", ".join(spec.config_cls.model_fields) or "none"
        if err.get("type") == "extra_forbidden":
            others = sorted(n for n, s in available_strategies().items()
                            if where in s.config_cls.model_fields)
            elsewhere = (f" ({where!r} is a hyperparameter of {', '.join(others)}, not of "
                         f"{name!r})") if others else ""
            raise StrategyError(f"strategy {name!r} has no hyperparameter {where!r}"
                                f"{elsewhere}; its hyperparameters: {known}") from None
        raise StrategyError(f"strategy {name!r}: hyperparameter {where!r}: {err['msg']} "
                            f"(got {err.get('input')!r})") from None


def make_plugin(name: str, hparams: dict[str, Any] | None = None) -> Any:
    """Instantiate strategy ``name``'s plugin with validated hyperparameters."""
    return get_strategy(name).cls(make_config(name, hparams))


#: the callbacks of Avalanche's ``SupervisedPlugin`` (what its training template calls;
#: ``tests/test_registry.py`` checks the list against Avalanche's own)
CALLBACKS = (
    "before_training", "before_training_exp", "before_train_dataset_adaptation",
    "after_train_dataset_adaptation", "before_training_epoch", "before_training_iteration",
    "before_forward", "after_forward", "before_backward", "after_backward",
    "after_training_iteration", "before_update", "after_update", "after_training_epoch",
    "after_training_exp", "after_training", "before_eval", "before_eval_exp",
    "before_eval_dataset_adaptation", "after_eval_dataset_adaptation",
    "before_eval_iteration", "before_eval_forward", "after_eval_forward",
    "after_eval_iteration", "after_eval_exp", "after_eval",
)


class Callbacks:
    """Every callback of Avalanche's ``SupervisedPlugin`` (:data:`CALLBACKS`), doing
    nothing: the light stand-in for it, listed last among a strategy's bases
    (``class Finetune(StrategyPlugin, Callbacks)``), so that importing a strategy (its
    ``Config``, for ``lrbench list`` or a dry run) does not import Avalanche, which takes
    seconds. Avalanche's template calls plugins' callbacks by name."""

    #: Avalanche's flag for plugins that support distributed training
    supports_distributed: ClassVar[bool] = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)


class StrategyPlugin:
    """Mixin of registered strategies: ``Config``, flags the template reads, state.

    Subclasses also derive from a class that has the plugin callbacks, listed after this
    one so that ``super().__init__`` reaches it: :class:`Callbacks` (or Avalanche's
    ``SupervisedPlugin``), or one of Avalanche's plugins, created lazily where importing
    it at module level would cost every command Avalanche's import (``strategies/ewc.py``).
    Behaviour comes through callbacks (``before_backward``, ``after_training_exp``...).
    Loss terms are added with ``strategy.add_loss(name, value)`` so they are logged.
    """

    Config: ClassVar[type[StrategyConfig]] = StrategyConfig
    strategy_name: ClassVar[str] = ""
    #: the model must have a cosine classifier (methods using logits)
    needs_classifier: ClassVar[bool] = False
    #: the strategy adds a loss term from the second experience on (checked by the kit)
    regularizer: ClassVar[bool] = False
    #: the hyperparameters ``lrbench tune`` searches and their ranges (name -> Uniform,
    #: LogUniform, IntRange or Choice), declared next to ``Config``; empty: nothing to tune
    tunable: ClassVar[dict[str, Tunable]] = {}
    #: the objective ``lrbench tune`` optimises for this strategy's tunables when it is not
    #: the command's ``--objective`` (a name of ``benchmarks.tune_search.OBJECTIVES``):
    #: drift compensation's act on the never-re-indexed gallery only (``final_nri``); the
    #: re-embedded union value of every trial would be the same. None: the command's
    tuning_objective: ClassVar[str | None] = None
    #: hyperparameters that change nothing up to the end of the first experience (weights
    #: of terms that need a teacher or importances): cells that differ only in them train
    #: that experience once (``lrbench run`` shares it: ``Cell.first_experience_key``).
    #: Empty (nothing shared) unless declared; the contract kit checks each name
    inactive_in_first_experience: ClassVar[frozenset[str]] = frozenset()
    #: how many leading experiences train (None: every one). The template stops before
    #: the first step of any later experience, so nothing changes there (weights,
    #: BatchNorm statistics, optimizer): ``pretrained`` trains none, ``first_session``
    #: only the first
    trains_experiences: ClassVar[int | None] = None
    #: the strategy whose first experience's training loop this one's equals, bit for
    #: bit, whatever its hyperparameters: its own terms idle there and that loop leaving
    #: its state as it was (``finetune`` for most: no teacher, importances or buffer yet).
    #: Cells of all such strategies run that loop once (``Cell.first_loop_key``); the
    #: contract kit checks it both ways. None: its own. Not inherited by a subclass
    first_loop_as: ClassVar[str | None] = None
    #: the model has no projection layer: the trunk's pooled features (their own
    #: dimension, not ``model.dim``) are the embedding (``pretrained``)
    pooled_embedding: ClassVar[bool] = False
    #: what is ranked is the model's embedding compared by cosine similarity, so stored
    #: gallery vectors can be moved in that space: drift compensation (``sdc_on``,
    #: ``ldc_on``) may wrap the strategy. False for a query-side transform (``slda``) and
    #: for a strategy that already updates the gallery
    exposes_embeddings: ClassVar[bool] = True

    def __init__(self, config: StrategyConfig | None = None, **plugin_kwargs: Any) -> None:
        """Keep ``config`` (the class's defaults when None) as ``self.config``, then
        initialise the class next in the MRO with ``plugin_kwargs`` (an Avalanche plugin
        listed after this class, if any): one place for what every strategy did itself."""
        self.config = config if config is not None else self.Config()
        super().__init__(**plugin_kwargs)

    def state_dict(self) -> dict[str, Any]:
        """What this plugin must carry across a checkpoint (tensors and plain values)."""
        return {}

    @classmethod
    def stream_problem(cls, config: StrategyConfig, train_images: Sequence[int]
                       ) -> str | None:
        """Why this strategy, with ``config``, cannot run on a stream whose experiences hold
        ``train_images`` train images each (None: it can). ``lrbench run`` and ``lrbench
        tune`` ask before any training and refuse the matrix in one line (a buffer larger
        than the data it can have seen: :class:`strategies.buffers.BufferStrategy`)."""
        return None

    @staticmethod
    def log_added_loss(strategy: Any, name: str, before: float) -> None:
        """Log what a wrapped Avalanche plugin added to ``strategy.loss`` since ``before``
        (those plugins add to the loss directly, not through ``add_loss``)."""
        if strategy.clock.train_exp_counter > 0:
            strategy.loss_terms[name] = float(strategy.loss.detach()) - before

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""

    @classmethod
    def trains_as(cls, name: str, hparams: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The strategy and (resolved) hyperparameters whose training loop this one's
        equals at every experience, bit for bit: itself (``name``, ``hparams``) unless it
        wraps another (a drift compensation trains as the strategy it wraps). Cells that
        train alike (``Cell.training_key``) run each experience's loop once."""
        return name, hparams

    def training_state(self) -> dict[str, Any]:
        """What the training loop changes in this plugin (for cells that share it):
        its whole :meth:`state_dict` unless it wraps another strategy."""
        return self.state_dict()

    def load_training_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`training_state` (written by a cell that trains alike)."""
        self.load_state_dict(state)


def _does_nothing(self: Any, strategy: Any, *args: Any, **kwargs: Any) -> None:
    """An Avalanche callback this strategy does not use."""


for _callback in CALLBACKS:
    setattr(Callbacks, _callback, _does_nothing)
