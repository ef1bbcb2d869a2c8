"""What a run's state is written as and read back from: the random states
(:func:`rng_state`), checkpoints read as tensors and plain values only
(:func:`read_checkpoint`), and the training loops that cells which train alike share
(:class:`SharedTraining`, with the end state of a loop taken from and loaded into a
:class:`~strategies.template.RetrievalTemplate`)."""

from __future__ import annotations

import random
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metrics.errors import LrbenchError
from metrics.io import atomic_write
from strategies.devices import cuda_rng_state, set_cuda_rng_state


class SharedTraining:
    """The folders where cells that train alike keep the end state of each experience's
    training loop, one file per experience (``exp003.pt``): ``folder`` for the cells with
    one training key (:attr:`~benchmarks.config.Cell.training_key`), and ``first`` for the
    first experience's loop of every strategy that trains it as another does
    (:attr:`~benchmarks.config.Cell.first_loop_key`; without the plugins' states, which
    that loop leaves as they were). Only a shortcut: a file that is absent or does not
    load is trained here (and said so through ``log``); one is written only when
    ``write`` (``write_first`` for ``first``), and a failed write costs the other cells
    time, not this one."""

    def __init__(self, folder: str | Path | None, write: bool = True,
                 log: Any = lambda message: None, first: str | Path | None = None,
                 write_first: bool = False) -> None:
        self.folder = None if folder is None else Path(folder)
        self.first = None if first is None else Path(first)
        self.write_ok, self.write_first, self.log = write, write_first, log
        #: the experiences whose loop this cell loaded instead of running
        self.loaded: list[int] = []
        #: the seconds those loops took in the cells that ran them
        self.loaded_s = 0.0

    def crossed(self, exp: int) -> bool:
        """Whether experience ``exp``'s loop is shared with other strategies (the first
        one, through ``first``): its file holds no plugin state."""
        return exp == 0 and self.first is not None

    def path(self, exp: int) -> Path | None:
        """The file of experience ``exp``'s trained state (None: no folder for it)."""
        folder = self.first if self.crossed(exp) else self.folder
        return None if folder is None else folder / f"exp{exp:03d}.pt"

    def read(self, exp: int, problem: Any = lambda state: None) -> dict[str, Any] | None:
        """Experience ``exp``'s trained state, or None (absent, unreadable, or one that
        ``problem(state)`` finds a reason not to use)."""
        path = self.path(exp)
        if path is None or not path.is_file():
            return None
        try:
            state = read_checkpoint(path)
            if state.get("experience") != exp:
                raise ValueError(f"it holds experience {state.get('experience')}, not {exp}")
            if (state.get("plugins") is None) != self.crossed(exp):
                raise ValueError("its plugin states are "
                                 f"{'absent' if state.get('plugins') is None else 'there'}, "
                                 "not as its folder says")
            why = problem(state)
            if why:
                raise ValueError(why)
        except Exception as exc:  # only a shortcut: train it here
            self.log(f"note: the shared training {path.name} could not be used "
                     f"({type(exc).__name__}: {exc}); training that experience in this cell")
            return None
        self.loaded.append(exp)
        self.loaded_s += float(state.get("loop_s") or 0.0)
        return state

    def write(self, exp: int, state: dict[str, Any]) -> None:
        """Keep experience ``exp``'s trained state (atomically; never over another's);
        one shared with other strategies without the plugins' states."""
        path = self.path(exp)
        if path is None or path.is_file() or not (
                self.write_first if self.crossed(exp) else self.write_ok):
            return
        if self.crossed(exp):
            state = {**state, "plugins": None}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda tmp: torch.save(state, tmp))
        except OSError as exc:
            self.log(f"note: could not write the shared training {path.name} "
                     f"({exc.strerror or exc}); the cells that would use it train it themselves")


class CheckpointError(LrbenchError):
    """A checkpoint file that does not load as tensors and plain values: one line naming
    the file and what to do."""


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint's state, loaded with ``torch.load(weights_only=True)``: tensors and
    plain containers only, so a file planted in a results store (a shared folder, a store
    copied from someone) can never run code. A file that does not load that way (a
    pickle of objects, a truncated file, a checkpoint of an lrbench before checkpoints
    held plain values, not a regular file) is a one-line :class:`CheckpointError`."""
    from metrics.io import NotARegularFile, check_regular

    fix = ("delete it (or move it aside) and its cell trains from the start; lrbench loads "
           "only tensors and plain values from a checkpoint, never code")
    try:
        if not check_regular(path, "checkpoint", fix):
            raise FileNotFoundError(2, "No such file", str(path))
        with warnings.catch_warnings():  # torch's note on the pickle protocol: not ours
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (FileNotFoundError, NotARegularFile):
        raise
    except Exception as exc:  # UnpicklingError (a global it refuses), EOFError, zip errors
        parts = [p.strip() for p in re.split(r"\n\s*\n|WeightsUnpickler error:", str(exc))]
        said = [p for p in parts if p and not p.startswith(  # torch's words, less its advice
            ("Weights only load failed", "Please file", "Check the doc"))]
        reason = " ".join(f"{type(exc).__name__}: {' '.join(said) or exc}".split())[:160]
        raise CheckpointError(f"{path}: not a checkpoint lrbench loads: it does not load as "
                              f"tensors and plain values ({reason}); {fix}") from None
    if not isinstance(state, dict) or "experiences_done" not in state:
        raise CheckpointError(f"{path}: not a checkpoint of lrbench's retrieval template; "
                              f"{fix}")
    return state


def rng_state() -> dict[str, Any]:
    """Every random state a run draws from, as tensors and plain values (what
    ``torch.load(weights_only=True)`` reads back): torch's, NumPy's legacy global one
    (its key array as a list of integers), Python's, and every CUDA device's (uint8
    tensors; empty where CUDA is not in use)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "numpy": [str(name), [int(k) for k in keys], int(pos), int(has_gauss),
                      float(gauss)],
            "python": random.getstate(), "cuda": cuda_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    set_cuda_rng_state(state.get("cuda"))  # absent from checkpoints written before it


def trained_state_problem(tpl: Any, state: dict[str, Any]) -> str | None:
    """Why ``state`` cannot be this cell's experience end (None: it can): checked
    before anything is loaded, so a file of another model or plugin set (a planted
    one, a different lrbench's) is trained instead, never half applied."""
    need = ("model", "criterion", "optimizer", "plugins", "loss_history", "loss_terms",
            "clock", "rng")
    missing = [k for k in need if k not in state]
    if missing:
        return f"it lacks {', '.join(missing)}"
    own, theirs = tpl.model.state_dict(), state["model"]
    if not isinstance(theirs, dict) or set(theirs) != set(own) or any(
            not isinstance(theirs[k], torch.Tensor) or theirs[k].shape != v.shape
            for k, v in own.items()):
        return "its model is not this cell's (other parameters or shapes)"
    groups = [len(g["params"]) for g in tpl.optimizer.param_groups]
    theirs_opt = state["optimizer"]
    if not isinstance(theirs_opt, dict) or not isinstance(theirs_opt.get("param_groups"),
                                                          list) or [
            len(g.get("params", ())) for g in theirs_opt["param_groups"]] != groups:
        return "its optimizer is not this cell's (other parameter groups)"
    if state["plugins"] is not None and (not isinstance(state["plugins"], list) or (
            len(state["plugins"]) != len(tpl._strategy_plugins()))):
        return "it was written with another set of strategy plugins"
    return None


def trained_state(tpl: Any, exp: int, start: int) -> dict[str, Any]:
    """The state at the end of experience ``exp``'s training loop (its loss history
    from row ``start``): everything the loop changes, nothing the callbacks around it
    do (those run in every cell)."""
    return {"experience": exp, "experiences_done": tpl.experiences_done,
            "model": tpl.model.state_dict(), "criterion": tpl._criterion_state(),
            "optimizer": tpl.optimizer.state_dict(),
            "plugins": [p.training_state() for p in tpl._strategy_plugins()],
            "loss_history": tpl.loss_history[start:],
            "loss_terms": dict(tpl.loss_terms),
            "clock": {k: v for k, v in vars(tpl.clock).items() if isinstance(v, int)},
            "rng": rng_state()}


def load_trained(tpl: Any, state: dict[str, Any]) -> None:
    """Continue as if this cell had run the loop :func:`trained_state` recorded."""
    tpl.model.load_state_dict(state["model"])
    tpl.model.to(tpl.device)
    if state["criterion"]:
        tpl._criterion.load_state_dict(state["criterion"])
    tpl.optimizer.load_state_dict(state["optimizer"])
    for plugin, plugin_state in zip(tpl._strategy_plugins(), state["plugins"] or [],
                                    strict=state["plugins"] is not None):
        plugin.load_training_state(plugin_state)  # none: a loop that leaves them as they were
    tpl.loss_history.extend(state["loss_history"])
    tpl.loss_terms = dict(state["loss_terms"])
    for key, value in state["clock"].items():
        setattr(tpl.clock, key, value)
    set_rng_state(state["rng"])
