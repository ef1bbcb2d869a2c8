"""The retrieval training template: Avalanche's ``SupervisedTemplate`` for metric learning.

What it changes, and why:

* batches are P classes x K images (pytorch-metric-learning's ``MPerClassSampler``, seeded
  per experience so a run is reproducible and resumable);
* the budget per experience is ``iterations`` P x K batches, or ``epochs`` passes over the
  experience's own train images (not the reference code's "epoch" of #classes x K images,
  and not the grown dataset that joint training or replay draw from: every strategy gets
  fine-tuning's number of steps);
* the criterion is a metric loss on the embeddings (``hard_mining`` by default); plugins
  add their terms with :meth:`RetrievalTemplate.add_loss`, which also logs them;
* no loss is computed at evaluation (retrieval metrics need only the embeddings);
* a non-finite loss, or a gradient whose norm is not finite or above ``max_grad_norm``
  (an exploding gradient), stops training at that step with a ``FloatingPointError``
  naming the iteration, the experience and the loss terms that were not finite;
* the cosine classifier, when the model has one, grows to the classes seen at the start
  of each training experience;
* a strategy may train only its first experiences (``trains_experiences``: the
  ``pretrained`` reference trains none, ``first_session`` only the first): from then on
  each experience stops before its first step, so the model does not change at all;
* ``training.trunk_lr_mult`` (the cell builds the optimizer) gives the trunk's trained
  layers a learning rate of their own against the new layers (projection, classifier);
* the optimizer state is reset at the start of every experience (a new optimizer per
  task, as in the reference implementations), which makes a checkpoint taken between
  experiences complete;
* a criterion with parameters of its own (``normalized_softmax``'s proxies) must have
  them in the optimizer (build it over :func:`strategies.losses.trainable_parameters`);
  the template refuses one that leaves them out, as they would silently never train;
* ``amp`` (bfloat16 autocast of the forward pass; the losses are computed in float32 on
  its output) acts on a CUDA device only: on CPU it is inactive, with a one-line note once
  per process, and changes no number. ``channels_last`` (model and images in the NHWC
  layout) acts on every device: on CPU it takes about 30% off a MobileNetV2 step (oneDNN's
  NHWC depthwise convolutions and BatchNorm), with numbers that differ from the default
  layout's by float rounding and are as deterministic;
* cells that train alike (:attr:`benchmarks.config.Cell.training_key`: a drift
  compensation and the strategy it wraps) may share each experience's training loop:
  with ``shared_training`` set, the state at the end of an experience's loop (model,
  criterion, optimizer, the strategies' training state, that experience's loss history,
  the clock and every random state) is loaded from the folder when a cell wrote it there,
  and written there after the loop otherwise; the callbacks around the loop (before and
  after the experience, the evaluation) run in every cell, so only the identical part is
  skipped;
* checkpoints are ``state_dict`` based (Avalanche's dill checkpointing fails on torch 2.14):
  model, criterion (its parameters, when it has any), optimizer, every plugin's state,
  metric history, RNG states (CPU, NumPy, Python, and every CUDA device's as uint8
  tensors: :mod:`strategies.devices`) and stream position, read back as tensors and plain
  values only (:mod:`strategies.checkpoints`, with the shared training loops).
"""

from __future__ import annotations

import random
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from avalanche.training.plugins import EvaluationPlugin
from avalanche.training.templates import SupervisedTemplate
from torch.utils.data import DataLoader

from metrics.io import atomic_write
from metrics.plugins import RetrievalMetrics
from strategies.checkpoints import (
    SharedTraining,
    load_trained,
    read_checkpoint,
    rng_state,
    set_rng_state,
    trained_state,
    trained_state_problem,
)
from strategies.devices import deterministic_cuda
from strategies.losses import HardMiningLoss
from strategies.registry import StrategyPlugin, derived_seed
from strategies.sampling import PKSampler, pk_order  # noqa: F401 (re-exported)

_NOTED: set[str] = set()


def note_once(message: str) -> None:
    """``lrbench: note: MESSAGE``, one line on stderr (above any progress bar), at most once
    per process for the same message."""
    if message not in _NOTED:
        _NOTED.add(message)
        from tqdm import tqdm

        tqdm.write(f"lrbench: note: {message}", file=sys.stderr)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU runs are then repeatable)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Compute with exactly ``n`` intra-op torch threads inside the block.

    A CPU float sum split over more threads adds in another order: the last bits change,
    and a near-tie in a ranking can flip. Fixing the count per cell makes its numbers a
    function of its config and seed, whatever the host's cores, ``--jobs`` or executor.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _check_criterion_optimized(criterion: Any, optimizer: torch.optim.Optimizer) -> None:
    """Refuse a criterion whose trainable parameters the optimizer does not update."""
    if not isinstance(criterion, torch.nn.Module):
        return
    optimized = {id(p) for g in optimizer.param_groups for p in g["params"]}
    missing = [n for n, p in criterion.named_parameters()
               if p.requires_grad and id(p) not in optimized]
    if missing:
        raise ValueError(
            f"the criterion's parameters {', '.join(missing)} are not in the optimizer, so "
            "they would never train; build the optimizer over "
            "strategies.losses.trainable_parameters(model, criterion)")


class RetrievalTemplate(SupervisedTemplate):
    """Metric-learning training on an Avalanche stream (see the module docstring)."""

    def __init__(
        self,
        *,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        criterion: Any = None,
        p: int = 16,
        k: int = 5,
        iterations: int | None = 100,
        epochs: float | None = None,
        eval_mb_size: int = 128,
        device: str | torch.device = "cpu",
        plugins: Sequence[Any] | None = None,
        metrics: RetrievalMetrics | None = None,
        loggers: Sequence[Any] = (),
        seed: int = 0,
        max_grad_norm: float | None = 1e4,
        amp: bool = False,
        channels_last: bool = False,
    ) -> None:
        if (iterations is None) == (epochs is None):
            raise ValueError("give exactly one budget: iterations or epochs")
        if p < 2 or k < 2:
            raise ValueError(f"P x K batches need P >= 2 classes and K >= 2 images, got {p} x {k}")
        self.p, self.k, self.iterations, self.epochs, self.seed = p, k, iterations, epochs, seed
        self.max_grad_norm = max_grad_norm
        self.amp, self.channels_last = self._amp_acts(device, amp), channels_last
        if torch.device(device).type == "cuda":
            deterministic_cuda()
        self.metrics = metrics or RetrievalMetrics()
        with warnings.catch_warnings():  # no loggers is a choice here, not a mistake
            warnings.filterwarnings("ignore", message="No loggers specified")
            evaluator = EvaluationPlugin(self.metrics, loggers=list(loggers))
        self.loss_terms: dict[str, float] = {}
        self.loss_history: list[dict[str, float]] = []
        self.experiences_done = 0
        #: where cells with this cell's training key share each experience's training loop
        #: (:class:`SharedTraining`; None: every loop runs here)
        self.shared_training: SharedTraining | None = None
        criterion = criterion or HardMiningLoss()
        _check_criterion_optimized(criterion, optimizer)
        super().__init__(
            model=model, optimizer=optimizer, criterion=criterion,
            train_mb_size=p * k, train_epochs=1, eval_mb_size=eval_mb_size, device=device,
            plugins=list(plugins or []), evaluator=evaluator, eval_every=-1,
        )

    # -- data -------------------------------------------------------------------------------
    def make_train_dataloader(self, num_workers: int = 0, **kwargs: Any) -> None:
        dataset = self.adapted_dataset
        targets = [int(t) for t in dataset.targets]
        n_classes = len(set(targets))
        if n_classes < self.p:
            raise ValueError(
                f"experience {self.experience.current_experience} has {n_classes} classes, "
                f"fewer than P = {self.p} classes per batch; lower P"
            )
        batch = self.p * self.k
        length = self.steps_for(len(self.experience.dataset)) * batch
        exp = int(self.experience.current_experience)
        sampler = PKSampler(targets, self.p, self.k, length,
                            seed=derived_seed(self.seed, 100_003, exp))
        self.dataloader = DataLoader(dataset, batch_size=batch, sampler=sampler,
                                     num_workers=num_workers, drop_last=True,
                                     collate_fn=dataset.collate_fn)

    def steps_for(self, train_images: int) -> int:
        """Optimisation steps for an experience of ``train_images`` images of its own.

        An ``epochs`` budget counts passes over the experience's OWN train images, not over
        the dataset a plugin trains on (joint's union of everything seen, replay's memory
        added): every strategy gets fine-tuning's number of steps per experience unless the
        matrix gives it another budget.
        """
        if self.iterations is not None:
            return int(self.iterations)
        return int(np.ceil(self.epochs * train_images / (self.p * self.k)))

    def loss_summary(self) -> dict[str, list[float | None]]:
        """Per experience trained: ``steps`` and the mean of every loss term over its steps
        (``metric``, each plugin term, ``total``); None where a term was not added."""
        by_exp: dict[int, list[dict[str, float]]] = {}
        for row in self.loss_history:
            by_exp.setdefault(int(row["experience"]), []).append(row)
        names = list(dict.fromkeys(k for r in self.loss_history for k in r if k != "experience"))
        exps = range(max(by_exp) + 1) if by_exp else range(0)
        out: dict[str, list[float | None]] = {
            "steps": [float(len(by_exp.get(e, []))) for e in exps]}
        for name in names:
            out[name] = [float(np.mean([r[name] for r in by_exp[e] if name in r]))
                         if any(name in r for r in by_exp.get(e, [])) else None for e in exps]
        return out

    @staticmethod
    def _amp_acts(device: str | torch.device, amp: bool) -> bool:
        """Whether ``amp`` acts on ``device``: on CUDA with bfloat16 support only; a one-line
        note when it was asked for where it does not (``channels_last`` acts everywhere)."""
        if not amp:
            return False
        if torch.device(device).type != "cuda":
            note_once(f"training.amp: inactive on {torch.device(device).type} (CUDA only); "
                      "this run computes in float32")
            return False
        if not torch.cuda.is_bf16_supported():
            note_once("training.amp: inactive, this GPU has no bfloat16 support")
            return False
        return True

    def forward(self) -> torch.Tensor:
        """The model on the minibatch; under bfloat16 autocast with ``amp`` (the embeddings
        come back as float32, so every loss and metric is computed in float32), on
        channels-last images with ``channels_last``."""
        if not (self.amp or self.channels_last):
            return super().forward()
        x = self.mb_x
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if not self.amp:
            return self.model(x)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            out = self.model(x)
        return out.float()

    # -- model ------------------------------------------------------------------------------
    def model_adaptation(self, model: torch.nn.Module | None = None) -> torch.nn.Module:
        model = super().model_adaptation(model)
        if self.is_training and hasattr(model, "grow"):
            seen = self.experience.classes_seen_so_far
            model.grow(max(seen) + 1 if seen else 0)
        if self.channels_last:
            return model.to(self.device, memory_format=torch.channels_last)
        return model.to(self.device)

    def check_model_and_optimizer(self, reset_optimizer_state: bool = True, **kwargs: Any):
        return super().check_model_and_optimizer(reset_optimizer_state=True, **kwargs)

    def make_optimizer(self, reset_optimizer_state: bool = False, **kwargs: Any) -> None:
        """Avalanche's re-mapping, with one case settled first: with several parameter
        groups (``trunk_lr_mult``), a model parameter the optimizer has never seen under
        its name joins group 0, the new layers'. Avalanche would infer its group from
        the module tree and refuse ("No unique group found") where the parameter's
        parent holds both groups: a classifier grown by a resumed checkpoint's
        ``load_state_dict`` before the first mapping. A classifier grown in training
        lands in group 0 too (the parameter it replaces is there), so a resumed run
        equals an uninterrupted one."""
        groups = self.optimizer.param_groups
        if len(groups) > 1:
            known = {id(p) for g in groups for p in g["params"]}
            mapped = self.optimized_param_id or {}
            for name, p in self.model.named_parameters():
                if name not in mapped and id(p) not in known:
                    groups[0]["params"].append(p)
        super().make_optimizer(reset_optimizer_state=reset_optimizer_state, **kwargs)

    # -- losses -----------------------------------------------------------------------------
    def criterion(self) -> torch.Tensor:
        if not self.is_training:
            return torch.zeros((), device=self.device)
        loss = self._criterion(self.mb_output, self.mb_y)
        self.loss_terms = {"metric": float(loss.detach())}
        return loss

    def add_loss(self, name: str, value: torch.Tensor) -> None:
        """Add a plugin's loss term to this iteration's loss (and log its value)."""
        self.loss = self.loss + value
        self.loss_terms[name] = self.loss_terms.get(name, 0.0) + float(value.detach())

    def _where(self) -> str:
        return (f"iteration {int(self.clock.train_epoch_iterations)} of experience "
                f"{int(self.experience.current_experience)}")

    def backward(self) -> None:
        """Backward pass, refusing a non-finite loss or an exploding gradient (see above)."""
        value = float(self.loss.detach())
        if not np.isfinite(value):
            bad = [k for k, v in self.loss_terms.items() if not np.isfinite(v)]
            raise FloatingPointError(f"loss is {value} at {self._where()}"
                                     + (f" (non-finite term: {', '.join(bad)})" if bad else ""))
        super().backward()
        grads = [p.grad for g in self.optimizer.param_groups for p in g["params"]
                 if p.grad is not None]
        if grads:
            norm = float(torch.nn.utils.get_total_norm(grads))
            if not np.isfinite(norm) or (self.max_grad_norm is not None
                                         and norm > self.max_grad_norm):
                raise FloatingPointError(
                    f"gradient norm {norm:.3g} at {self._where()} exceeds max_grad_norm = "
                    f"{self.max_grad_norm:g} (an exploding gradient); lower the learning rate "
                    "or raise training.max_grad_norm")

    def trains_now(self) -> bool:
        """Whether the current experience trains: False from the first experience that a
        strategy plugin's ``trains_experiences`` excludes (``pretrained``: every one;
        ``first_session``: every one after the first)."""
        limits = [p.trains_experiences for p in self._strategy_plugins()
                  if p.trains_experiences is not None]
        return not limits or int(self.experience.current_experience) < min(limits)

    def _before_training_epoch(self, **kwargs: Any) -> None:
        super()._before_training_epoch(**kwargs)
        if not self.trains_now():  # Avalanche's early stop, checked before the first step
            self.stop_training()

    def _after_training_iteration(self, **kwargs: Any) -> None:
        self.loss_history.append({"experience": float(self.experience.current_experience),
                                  "total": float(self.loss.detach()), **self.loss_terms})
        super()._after_training_iteration(**kwargs)

    def _train_exp(self, experience: Any, eval_streams: Any = None, **kwargs: Any) -> None:
        """The experience's training loop, or its end state loaded from
        :attr:`shared_training` when another cell with this training already ran it."""
        shared, exp = self.shared_training, int(experience.current_experience)
        state = (shared.read(exp, lambda s: trained_state_problem(self, s))
                 if shared is not None else None)
        if state is not None:
            load_trained(self, state)
            return
        start, began = len(self.loss_history), time.perf_counter()
        super()._train_exp(experience, eval_streams, **kwargs)
        if shared is not None:
            shared.write(exp, {**trained_state(self, exp, start),
                               "loop_s": time.perf_counter() - began})

    # -- stream -----------------------------------------------------------------------------
    def run(self, benchmark: Any, checkpoint: str | Path | None = None,
            stop_after: int | None = None) -> RetrievalMetrics:
        """Train on each experience from ``experiences_done`` on, evaluating on the whole
        test stream after each; save a checkpoint after each when ``checkpoint`` is set.
        ``stop_after`` ends the run after that many experiences (for tests and resumes)."""
        for exp in benchmark.train_stream[self.experiences_done:]:
            self.train(exp)
            self.eval(benchmark.test_stream)
            self.experiences_done += 1
            if checkpoint is not None:
                self.save_checkpoint(checkpoint)
            if stop_after is not None and self.experiences_done >= stop_after:
                break
        return self.metrics

    # -- checkpoints ------------------------------------------------------------------------
    def _strategy_plugins(self) -> list[Any]:
        return [p for p in self.plugins if isinstance(p, StrategyPlugin)]

    def _criterion_state(self) -> dict[str, Any]:
        """The criterion's ``state_dict`` (empty for a loss without parameters or buffers)."""
        crit = self._criterion
        return crit.state_dict() if isinstance(crit, torch.nn.Module) else {}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this run exactly, at an experience boundary."""
        return {
            "model": self.model.state_dict(),
            "criterion": self._criterion_state(),
            "optimizer": self.optimizer.state_dict(),
            "plugins": [p.state_dict() for p in self._strategy_plugins()],
            "metrics": self.metrics.state_dict(),
            "experiences_done": self.experiences_done,
            "loss_history": list(self.loss_history),
            "clock": {k: v for k, v in vars(self.clock).items() if isinstance(v, int)},
            "rng": rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` into a template built with the same configuration."""
        self.model.load_state_dict(state["model"])
        self.model.to(self.device)
        if state.get("criterion"):  # absent from checkpoints older than the field
            self._criterion.load_state_dict(state["criterion"])
        plugins = self._strategy_plugins()
        if len(plugins) != len(state["plugins"]):
            raise ValueError("checkpoint was written with a different set of strategy plugins")
        for plugin, plugin_state in zip(plugins, state["plugins"], strict=True):
            plugin.load_state_dict(plugin_state)
        self.metrics.load_state_dict(state["metrics"])
        self.experiences_done = int(state["experiences_done"])
        self.loss_history = list(state["loss_history"])
        for key, value in state["clock"].items():  # plugins read the experience counter
            setattr(self.clock, key, value)
        set_rng_state(state["rng"])
        # the optimizer is rebuilt over the (possibly grown) model at the next experience,
        # its state reset there; nothing else of it carries over

    def save_checkpoint(self, path: str | Path) -> None:
        """Write :meth:`state_dict` atomically (temporary file, then rename)."""
        state = self.state_dict()
        atomic_write(path, lambda tmp: torch.save(state, tmp))

    def load_checkpoint(self, path: str | Path) -> None:
        """Read a checkpoint written by :meth:`save_checkpoint` (:func:`read_checkpoint`:
        tensors and plain values only, never code)."""
        self.load_state_dict(read_checkpoint(path))
