"""Shared machinery of the drift-compensation strategies (``sdc``, ``ldc``).

A drift compensation does not change how a model learns: it wraps a training strategy
(``sdc_on: fecd``, with that strategy's hyperparameters in ``on_params``), which trains
exactly as it does alone, and adds an estimate of how the embedding space moved during each
experience. From the second experience on, the model's embeddings of the experience's train
images are taken twice (evaluation transform, model in eval mode, no random number drawn):
before training (by the model after the previous experience, ``z^{t-1}``) and after
(``z^t``). Only the current experience's data is used. The estimate then moves

* every stored gallery vector of an earlier experience (:meth:`update_gallery`, called by
  the evaluation, :mod:`metrics.gallery`), without its image and without its label, so an
  index that was never re-embedded follows the model; and
* the class prototypes (the mean embedding of each class's train images after the
  experience that brought it), kept for strategies that classify by them.

Both are accumulated: a vector stored after experience 1 is moved by the estimate of
experience 2, then by that of experience 3, and so on. The strategy that is wrapped must
rank queries by their embedding (``exposes_embeddings``) and must not update the gallery
itself (:func:`check_wrapped`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from strategies.registry import (
    CALLBACKS,
    Callbacks,
    StrategyConfig,
    StrategyError,
    StrategyPlugin,
    get_strategy,
    make_config,
    make_plugin,
)


def check_wrapped(name: Any, field: str) -> str:
    """``name`` when it is a strategy a drift compensation may wrap; a ``ValueError`` (one
    line, reported as the hyperparameter ``field``'s error before any training) when it is
    not a registered strategy, cannot expose embeddings, or updates the gallery itself."""
    if not isinstance(name, str):
        raise ValueError(f"give the name of a registered strategy, got {name!r}")
    try:
        spec = get_strategy(name)
    except StrategyError as exc:
        raise ValueError(str(exc)) from None
    if getattr(spec.cls, "updates_gallery", False):
        raise ValueError(f"strategy {name!r} updates the stored gallery itself; a drift "
                         f"compensation wraps a training strategy ({field}: finetune, fecd, "
                         "...)")
    if not getattr(spec.cls, "exposes_embeddings", True):
        raise ValueError(f"strategy {name!r} cannot expose embeddings for drift compensation: "
                         "its queries are ranked through a transform of their own, not by "
                         "the embedding a stored gallery vector could be moved in; wrap a "
                         "strategy that ranks by the embedding (finetune, fecd, ...)")
    return name


def resolve_wrapped(name: Any, params: Any) -> dict[str, Any]:
    """The wrapped strategy's hyperparameters ``params`` resolved with its defaults (so
    ``{}`` and the defaults written out are the same cell); a ``ValueError`` for a bad one.
    ``name`` None (itself refused): ``params`` unchanged."""
    if name is None:
        return params
    if not isinstance(params, dict):
        raise ValueError(f"give {name!r}'s hyperparameters as a mapping, got {params!r}")
    try:
        return make_config(name, params).resolved()
    except StrategyError as exc:
        raise ValueError(str(exc)) from None


class DriftCompensation(StrategyPlugin, Callbacks):
    """Base of ``sdc`` and ``ldc`` (see the module docstring): every callback goes to the
    wrapped strategy's plugin, and the embeddings before and after each experience are
    handed to :meth:`fit`; :meth:`move` maps vectors of the previous model's space into the
    current one's. The flags the runner and the template read are the wrapped strategy's."""

    #: the evaluation replaces stored gallery vectors by :meth:`update_gallery`
    updates_gallery: ClassVar[bool] = True
    #: a drift compensation is not wrapped again
    exposes_embeddings: ClassVar[bool] = False
    #: its hyperparameters move stored gallery vectors and nothing else (the wrapped
    #: strategy trains as it would alone): tuned on the never-re-indexed value, which they
    #: change, not on the re-embedded union value, which every trial shares
    tuning_objective: ClassVar[str | None] = "final_nri"
    #: the Config field that names the wrapped strategy (``sdc_on``)
    wraps: ClassVar[str] = ""

    def __init__(self, config: StrategyConfig | None = None) -> None:
        super().__init__(config)
        self.inner = make_plugin(self.wrapped_name(self.config), self.config.on_params)
        for flag in ("needs_classifier", "regularizer", "trains_experiences",
                     "pooled_embedding"):
            setattr(self, flag, getattr(self.inner, flag))
        if callable(getattr(self.inner, "query_transform", None)):
            self.query_transform = self.inner.query_transform
        #: the experience whose data computed the current estimate (None: no estimate yet)
        self.gallery_update_step: int | None = None
        #: class -> prototype (float64, the current model's space)
        self.prototypes: dict[int, torch.Tensor] = {}
        self._before: torch.Tensor | None = None

    @classmethod
    def wrapped_name(cls, config: StrategyConfig) -> str:
        """The name of the strategy ``config`` wraps."""
        return str(getattr(config, cls.wraps))

    @classmethod
    def stream_problem(cls, config: StrategyConfig, train_images: Any) -> str | None:
        """The wrapped strategy's (a buffer larger than the stream, ...)."""
        name = cls.wrapped_name(config)
        return get_strategy(name).cls.stream_problem(make_config(name, config.on_params),
                                                     train_images)

    # -- the estimate ---------------------------------------------------------------------
    def fit(self, strategy: Any, old: torch.Tensor, new: torch.Tensor) -> None:
        """Estimate the drift from the current experience's train embeddings ``old``
        (``z^{t-1}``) and ``new`` (``z^t``), float64 n x d."""
        raise NotImplementedError

    def move(self, vectors: torch.Tensor) -> torch.Tensor:
        """``vectors`` (float64, the previous model's space) moved by the estimate."""
        raise NotImplementedError

    def update_gallery(self, vectors: torch.Tensor) -> torch.Tensor:
        """Stored gallery vectors moved into the current model's space (label-free: each
        vector is moved by where it lies, never by its class)."""
        return self.move(vectors.detach().double().cpu()).to(vectors.dtype)

    def _embed(self, strategy: Any) -> tuple[torch.Tensor, torch.Tensor]:
        from strategies.buffers import embed_items, evaluation_items

        return embed_items(strategy, evaluation_items(strategy.experience))

    def _own_before_training_exp(self, strategy: Any) -> None:
        self._before = None
        if int(strategy.experience.current_experience) >= 1:
            self._before = self._embed(strategy)[0]

    def _own_after_training_exp(self, strategy: Any) -> None:
        exp = int(strategy.experience.current_experience)
        new, labels = self._embed(strategy)
        if self._before is not None:
            self.fit(strategy, self._before, new)
            self.prototypes = {c: self.move(p[None])[0] for c, p in self.prototypes.items()}
            self.gallery_update_step = exp
        for c in torch.unique(labels).tolist():
            self.prototypes[int(c)] = new[labels == c].mean(dim=0)
        self._before = None

    # -- checkpoints ------------------------------------------------------------------------
    @classmethod
    def trains_as(cls, name: str, hparams: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The wrapped strategy's training: a drift compensation changes none of it."""
        inner = str(hparams[cls.wraps])
        return get_strategy(inner).cls.trains_as(inner, dict(hparams["on_params"]))

    def training_state(self) -> dict[str, Any]:
        """The wrapped strategy's (the estimate is made after the loop, in every cell)."""
        return self.inner.training_state()

    def load_training_state(self, state: dict[str, Any]) -> None:
        self.inner.load_training_state(state)

    def own_state(self) -> dict[str, Any]:
        """The subclass's estimate, as tensors and plain values."""
        return {}

    def load_own_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`own_state`."""

    def state_dict(self) -> dict[str, Any]:
        return {"inner": self.inner.state_dict(), "prototypes": dict(self.prototypes),
                "step": self.gallery_update_step, "own": self.own_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state["inner"])
        self.prototypes = dict(state["prototypes"])
        self.gallery_update_step = state["step"]
        self.load_own_state(state["own"])


def _delegate(name: str) -> Any:
    """The callback ``name``: the wrapped plugin's, with this class's own step before it
    (``before_*``) or after it (``after_*``) when it has one."""

    def callback(self: DriftCompensation, strategy: Any, *args: Any, **kwargs: Any) -> Any:
        own = getattr(self, f"_own_{name}", None)
        if own is not None and name.startswith("before"):
            own(strategy)
        result = getattr(self.inner, name)(strategy, *args, **kwargs)
        if own is not None and name.startswith("after"):
            own(strategy)
        return result

    callback.__name__ = name
    return callback


for _callback in CALLBACKS:
    setattr(DriftCompensation, _callback, _delegate(_callback))
