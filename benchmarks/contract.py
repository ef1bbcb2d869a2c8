"""The contract kit: prove in seconds that a strategy plugin works, in one line.

In a plugin author's test file::

    from benchmarks.contract import check_strategy

    def test_my_method_contract(tmp_path):
        check_strategy("my_method", tmp_path=tmp_path)

On a tiny synth-fg class-incremental stream (3 experiences x 4 classes, 32 px, a small
CNN, or another randomly initialised trunk: ``trunk="timm:resnet18"``) it checks that the
strategy

1. trains on 3 experiences (only the leading ones it declares in ``trains_experiences``,
   its model then bit-identical after every later experience) and every logged loss is
   finite;
2. changes the loss when its regulariser is on (strategies flagged ``regularizer``): from
   the second experience a term of its own is non-zero;
3. evaluates to a full R matrix (3 x 3 Recall@1, zero-shot entries included);
4. checkpoints after the first experience and resumes to identical numbers;
5. is deterministic under a seed (two runs, identical R matrices and losses);
6. leaves the state after the first experience (model, optimizer, its own state, metrics,
   losses, RNG) bit-identical when any hyperparameter it declares
   ``inactive_in_first_experience`` takes other values (zero among them, where valid),
   one at a time and all at once: the runner shares that experience between such cells,
   so a wrong declaration would change numbers. A check on this stream and these values,
   not a proof for every input: declare only what acts through a teacher or importances.
7. trains as the strategy it declares it trains as (``trains_as``: a drift compensation,
   the one it wraps): loading that strategy's training loop at every experience, then
   running only what comes after it (the drift estimate, the evaluation), ends in the
   state of training itself, bit for bit, and so does loading the first and last and
   training the middle one itself (the runner shares the loops between such cells, and a
   cell may find only some of them written); and its first experience's loop, where it
   declares that loop another strategy's (``first_loop_as``), shared with that strategy
   both ways (each loading the other's), ends in the state of training alone, and that
   loop is the same with each hyperparameter at other values;
8. with a trunk other than the small CNN, embeds a 224 px image in 512 dimensions (the
   papers' size; ``lrbench check finetune --trunk bninception``).

Failures raise ``AssertionError`` with what went wrong. ``lrbench check NAME`` runs the same
checks from the command line, printing each as it passes.

The kit builds its runs as the runner builds a cell (:func:`benchmarks.run.cell.build_cell`:
the same plugin, model, metric loss, optimizer and gradient-norm guard), so what it proves
holds for ``lrbench run``. It lives in ``benchmarks``, beside the runner it exercises:
strategies never import benchmarks.
"""

from __future__ import annotations

import math
import tempfile
import typing
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.config import (
    CacheSpec,
    Cell,
    EvaluationSpec,
    ModelSpec,
    ScenarioSpec,
    TrainingSpec,
    first_loop_target,
    resolved_hparams,
)
from strategies.registry import StrategyError, StrategySpec, get_strategy, make_config

_BASE_TERMS = {"experience", "total", "metric", "ce"}

#: the kit's stream: 3 experiences of 4 synth-fg classes (10 train / 6 test images each,
#: 32 px), in class-id order
TINY_SCENARIO = ScenarioSpec(
    name="contract-tiny", dataset="synth-fg", schedule="4+4+4", order="sorted", image_size=32,
    dataset_kwargs={"num_classes": 12, "train_per_class": 10, "test_per_class": 6})


#: the image size and embedding dimension a trunk other than the small CNN is also checked
#: at (the papers' 224 px, 512-d)
FULL_SIZE, FULL_DIM = 224, 512


def tiny_cell(name: str, hparams: dict[str, Any] | None = None, seed: int = 0,
              iterations: int = 6, lr: float = 0.01, trunk: str = "small_cnn",
              device: str = "cpu") -> Cell:
    """A cell running strategy ``name`` on the kit's tiny stream with ``trunk`` randomly
    initialised (``model.trunk`` of a matrix: a small CNN by default, or e.g. timm:resnet18),
    a 32-d embedding, P x K = 4 x 3, Adam, ``iterations`` steps per experience, on
    ``device`` (``training.device``)."""
    return Cell(scenario=TINY_SCENARIO, strategy=name,
                hparams=resolved_hparams(name, hparams or {}), seed=seed,
                model=ModelSpec(trunk=trunk, dim=32, pool="avg"),
                training=TrainingSpec(p=4, k=3, iterations=iterations, lr=lr,
                                      eval_mb_size=64, device=device),
                evaluation=EvaluationSpec(ks=[1, 2], map_at_r=False), cache=CacheSpec())


def tiny_stream(seed: int = 0) -> Any:
    """The kit's stream (:data:`TINY_SCENARIO`) as an Avalanche benchmark."""
    from benchmarks.run.cell import build_benchmark

    return build_benchmark(tiny_cell("finetune", seed=seed))


def build_template(name: str, hparams: dict[str, Any] | None = None, seed: int = 0,
                   iterations: int = 6, lr: float = 0.01, trunk: str = "small_cnn",
                   device: str = "cpu") -> Any:
    """The training template of :func:`tiny_cell`, built as the runner builds it (used by
    the kit and quick tests)."""
    from benchmarks.run.cell import build_cell

    return build_cell(tiny_cell(name, hparams, seed, iterations, lr, trunk, device)).template


@dataclass
class ContractReport:
    """What the kit measured (returned when every check passed)."""

    name: str
    r_matrix: np.ndarray
    loss_terms: set[str] = field(default_factory=set)
    checks: list[str] = field(default_factory=list)


def check_strategy(name: str, hparams: dict[str, Any] | None = None, *,
                   tmp_path: str | Path | None = None, iterations: int = 6,
                   seed: int = 0, on_check: Callable[[str], None] | None = None,
                   trunk: str = "small_cnn", device: str = "cpu") -> ContractReport:
    """Run the contract checks on strategy ``name`` (see the module docstring);
    ``on_check`` is called with each check's description as soon as it passed; ``trunk``
    is the model's trunk (``model.trunk`` of a matrix), randomly initialised; ``device``
    where it trains (``cuda``: the GPU check, ``tools/gpu-check.sh``)."""
    spec = get_strategy(name)
    bench = tiny_stream()
    report = ContractReport(name, np.empty(0))

    def passed(*checks: str) -> None:
        for check in checks:
            report.checks.append(check)
            if on_check is not None:
                on_check(check)

    # 1 + 3: trains on 3 experiences (those it declares), finite losses, full R matrix
    trains = spec.cls.trains_experiences
    n_trained = 3 if trains is None else min(trains, 3)
    first = build_template(name, hparams, seed, iterations, trunk=trunk, device=device)
    first.run(bench)
    r = first.metrics.r_matrix(1)
    report.r_matrix = r
    trained = sorted({int(row["experience"]) for row in first.loss_history})
    assert trained == list(range(n_trained)), (
        f"{name}: trained in experiences {trained or 'none'}, expected "
        f"{list(range(n_trained)) or 'none'} (trains_experiences = {trains})")
    for row in first.loss_history:
        bad = {k: v for k, v in row.items() if not math.isfinite(v)}
        assert not bad, f"{name}: non-finite loss terms {bad} in experience {row['experience']}"
    assert r.shape == (3, 3) and np.isfinite(r).all(), f"{name}: R matrix not full:\n{r}"
    report.loss_terms = {k for row in first.loss_history for k in row} - {"experience"}
    passed(f"trains on {n_trained} of 3 experiences" if trains is not None
           else "trains on 3 experiences", "finite losses", "full R matrix")

    # 1b: a strategy that stops training leaves its model bit-identical from then on
    if trains is not None:
        states = frozen_states(name, hparams, seed, iterations, trunk, bench, device)
        for i in range(n_trained + 1, len(states)):
            diff = first_difference(states[n_trained], states[i], "model")
            assert diff is None, (f"{name}: declares trains_experiences = {trains}, yet "
                                  f"experience {i - 1} changed its model ({diff})")
        passed(f"model unchanged after experience {n_trained - 1}" if n_trained
               else "model never changes")

    # 2: the regulariser changes the loss
    if spec.cls.regularizer:
        later = [row for row in first.loss_history if row["experience"] >= 1]
        own = {k for row in later for k, v in row.items() if k not in _BASE_TERMS and v != 0}
        assert own, (f"{name}: flagged as a regulariser, but no term of its own is non-zero "
                     f"after the first experience (terms: {sorted(report.loss_terms)})")
        passed(f"regulariser active ({', '.join(sorted(own))})")

    # 5: determinism under a seed
    second = build_template(name, hparams, seed, iterations, trunk=trunk, device=device)
    second.run(bench)
    assert np.array_equal(second.metrics.r_matrix(1), r), (
        f"{name}: two runs with seed {seed} differ:\n{r}\n{second.metrics.r_matrix(1)}")
    assert second.loss_history == first.loss_history, f"{name}: losses differ between runs"
    passed("deterministic under a seed")

    # 4: checkpoint after the first experience, resume in a fresh template
    with tempfile.TemporaryDirectory(dir=tmp_path) as tmp:
        ckpt = Path(tmp) / "checkpoint.pt"
        part = build_template(name, hparams, seed, iterations, trunk=trunk, device=device)
        part.run(bench, checkpoint=ckpt, stop_after=1)
        # another initialisation: it must not matter
        resumed = build_template(name, hparams, seed + 1, iterations, trunk=trunk,
                                 device=device)
        resumed.seed = seed
        resumed.load_checkpoint(ckpt)
        resumed.run(bench)
    assert np.array_equal(resumed.metrics.r_matrix(1), r), (
        f"{name}: resumed run differs from the uninterrupted one:\n{r}\n"
        f"{resumed.metrics.r_matrix(1)}")
    assert resumed.loss_history == first.loss_history, f"{name}: resumed losses differ"
    passed("checkpoint + resume identical")

    # 6: what it declares inactive in the first experience changes nothing there
    idle = sorted(spec.inactive_in_first_experience)
    if idle:
        def first_state(params: dict[str, Any]) -> dict[str, Any]:
            tpl = build_template(name, params, seed, iterations, trunk=trunk, device=device)
            tpl.run(bench, stop_after=1)
            return tpl.state_dict()

        base = dict(hparams or {})
        reference = first_state(base)
        current = make_config(name, base).model_dump()
        others = {hp: other_values(spec, hp, base) for hp in idle}
        untried = [hp for hp, values in others.items() if not values]
        assert not untried, (f"{name}: no other valid value of {', '.join(untried)} to try, so "
                             "the kit cannot check its inactive_in_first_experience "
                             "declaration; remove it from there")
        # each name alone (every value tried), then all of them changed at once (when the
        # Config accepts that combination)
        variants = [{hp: value} for hp, values in others.items() for value in values]
        together = {hp: values[0] for hp, values in others.items()}
        if len(together) > 1:
            try:
                make_config(name, {**base, **together})
                variants.append(together)
            except StrategyError:
                pass
        for change in variants:
            diff = first_difference(reference, first_state({**base, **change}))
            assert diff is None, (
                f"{name}: {', '.join(f'{k}={v!r}' for k, v in change.items())} (instead of "
                f"{', '.join(f'{current[k]!r}' for k in change)}) changes the state after "
                f"the first experience ({diff}), yet the strategy declares "
                f"{'it' if len(change) == 1 else 'them'} in inactive_in_first_experience; "
                "remove what acts there")
        passed(f"first experience unchanged by {', '.join(idle)}")

    # 7: trained from the loops of the strategy it trains as, the numbers of training itself
    as_name, as_hparams = spec.cls.trains_as(name, resolved_hparams(name, hparams or {}))
    if as_name != name:
        from strategies.checkpoints import SharedTraining

        n_exp = len(bench.train_stream)
        with tempfile.TemporaryDirectory(dir=tmp_path) as tmp:
            twin = build_template(as_name, as_hparams, seed, iterations, trunk=trunk,
                                  device=device)
            twin.shared_training = SharedTraining(tmp)
            twin.run(bench)
            for skipped in (None, 1):  # every loop loaded; the middle one trained here
                if skipped is not None:
                    SharedTraining(tmp).path(skipped).unlink()
                follower = build_template(name, hparams, seed, iterations, trunk=trunk,
                                          device=device)
                follower.shared_training = SharedTraining(tmp, write=False)
                follower.run(bench)
                loaded = follower.shared_training.loaded
                assert loaded == [e for e in range(n_exp) if e != skipped], (
                    f"{name}: loaded the training loops of experiences {loaded} written "
                    f"by {as_name}")
                diff = first_difference(first.state_dict(), follower.state_dict())
                assert diff is None, (
                    f"{name}: with {as_name}'s training loops "
                    f"{'' if skipped is None else f'(but the one of experience {skipped}) '}"
                    f"its state differs from training itself ({diff}), yet trains_as says "
                    f"it trains as {as_name}")
        passed(f"trains as {as_name}: its shared training loops give the same bits")

    # 7b: the first loop shared with the strategy it trains that loop as, both ways, and
    # the same loop at other values of every hyperparameter (its key ignores them all)
    target = first_loop_target(as_name)
    if target is not None and target != name:
        from strategies.checkpoints import SharedTraining, read_checkpoint

        class LoopWritten(Exception):
            """Raised once the first loop's file is written: nothing after it is needed."""

        class WriteThenStop(SharedTraining):
            def write(self, exp: int, state: dict[str, Any]) -> None:
                super().write(exp, state)
                raise LoopWritten

        def first_loop(who: str, params: dict[str, Any] | None, folder: Path,
                       write: bool = True, whole: bool = False) -> Any:
            """``who`` run with ``folder`` as its shared first loop: the whole stream, or
            (by default) only up to the end of that loop, its file written."""
            tpl = build_template(who, params, seed, iterations, trunk=trunk, device=device)
            shared = SharedTraining if whole else WriteThenStop
            tpl.shared_training = shared(None, False, first=folder, write_first=write)
            with suppress(LoopWritten):
                tpl.run(bench)
            return tpl

        def loop_file(folder: Path) -> dict[str, Any]:
            return {k: v for k, v in read_checkpoint(folder / "exp000.pt").items()
                    if k != "loop_s"}

        blame = f"yet {name} declares first_loop_as = {target!r}; remove it"
        target_alone = build_template(target, None, seed, iterations, trunk=trunk,
                                      device=device)
        target_alone.run(bench)
        with tempfile.TemporaryDirectory(dir=tmp_path) as tmp:
            for writer, reader, alone in ((target, name, first), (name, target, target_alone)):
                folder = Path(tmp) / writer
                first_loop(writer, hparams if writer == name else None, folder, whole=True)
                tpl = first_loop(reader, hparams if reader == name else None, folder,
                                 write=False, whole=True)
                assert tpl.shared_training.loaded == [0], (
                    f"{reader}: loaded the training loops {tpl.shared_training.loaded} of "
                    f"{writer}, not the first one alone, {blame}")
                diff = first_difference(alone.state_dict(), tpl.state_dict())
                assert diff is None, (f"{reader}: with the first training loop of {writer}, "
                                      f"its state differs from training itself ({diff}), {blame}")
            reference = loop_file(Path(tmp) / target)
            base = dict(hparams or {})
            for hp in spec.config_cls.model_fields:
                for i, value in enumerate(other_values(spec, hp, base)):
                    params = {**base, hp: value}
                    other = spec.cls.trains_as(name, resolved_hparams(name, params))[0]
                    if first_loop_target(other) != target:
                        continue  # wraps another strategy now: its own declaration holds
                    folder = Path(tmp) / f"{hp}-{i}"
                    first_loop(name, params, folder)
                    diff = first_difference(reference, loop_file(folder))
                    assert diff is None, (f"{name}: with {hp}={value!r} its first training "
                                          f"loop differs from {target}'s ({diff}), {blame}")
        passed(f"first loop as {target}'s: shared both ways, the same bits")

    # 8: another trunk embeds a full-size image at the default dimension (512)
    if trunk != "small_cnn":
        import torch

        from strategies.model import EmbeddingNet

        torch.manual_seed(seed)
        model = EmbeddingNet(trunk, dim=FULL_DIM).eval().to(device)
        with torch.no_grad():
            out = model(torch.zeros(2, 3, FULL_SIZE, FULL_SIZE, device=device))
        assert out.shape == (2, FULL_DIM) and bool(torch.isfinite(out).all()), (
            f"{trunk}: a {FULL_SIZE} px image embeds to {tuple(out.shape)[1:]}, not "
            f"{FULL_DIM}-d")
        passed(f"{trunk} embeds a {FULL_SIZE} px image in {FULL_DIM} dimensions")
    return report


def frozen_states(name: str, hparams: dict[str, Any] | None, seed: int, iterations: int,
                  trunk: str, bench: Any, device: str = "cpu") -> list[dict[str, Any]]:
    """The model's ``state_dict`` (weights and BatchNorm statistics, copied) before the
    stream and after each experience of ``bench``."""
    tpl = build_template(name, hparams, seed, iterations, trunk=trunk, device=device)

    def copy_of() -> dict[str, Any]:
        return {k: v.detach().clone() for k, v in tpl.model.state_dict().items()}

    states = [copy_of()]
    for done in range(1, len(bench.train_stream) + 1):
        tpl.run(bench, stop_after=done)
        states.append(copy_of())
    return states


def other_values(spec: StrategySpec, hp: str, hparams: dict[str, Any],
                 most: int = 2) -> list[Any]:
    """Up to ``most`` valid values of hyperparameter ``hp`` other than its value in
    ``hparams`` (or its default): zero first where it is valid (a weight of zero often
    skips code), then the ends of its tunable range, then a few more of its type; every
    other option of a switch."""
    current = make_config(spec.name, hparams).model_dump()[hp]
    ann = spec.config_cls.model_fields[hp].annotation
    kinds = set(typing.get_args(ann)) or {ann}
    if typing.get_origin(ann) is typing.Literal:
        candidates: list[Any] = list(typing.get_args(ann))
        most = len(candidates)
    elif ann is bool:
        candidates = [not current]
    elif not kinds & {int, float}:  # text, a mapping: nothing to derive a value from
        candidates = [None] if type(None) in kinds else []
    else:
        space = spec.tunables.get(hp)
        ends = list(space.endpoints()) if space is not None else []
        if int in kinds and float not in kinds:
            candidates = [0, *ends, 2, 8, int(current or 0) * 3 + 1]
        else:
            x = float(current or 0.0)
            candidates = [0.0, *ends, x * 3 + 0.5, x / 3 + 0.01, -x - 0.5]
        if type(None) in kinds:
            candidates.append(None)
    out: list[Any] = []
    for value in candidates:
        if len(out) >= most:
            break
        if value == current or value in out or (isinstance(value, bool) and ann is not bool):
            continue
        try:
            make_config(spec.name, {**hparams, hp: value})
        except StrategyError:
            continue
        out.append(value)
    return out


def first_difference(a: Any, b: Any, where: str = "state") -> str | None:
    """Where two checkpoint states first differ, bit for bit (None: identical)."""
    import torch

    if isinstance(a, dict) and isinstance(b, dict):
        if list(a) != list(b):
            return f"{where}: keys {sorted(map(str, a))} != {sorted(map(str, b))}"
        for key in a:
            diff = first_difference(a[key], b[key], f"{where}[{key!r}]")
            if diff:
                return diff
        return None
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        if len(a) != len(b):
            return f"{where}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            diff = first_difference(x, y, f"{where}[{i}]")
            if diff:
                return diff
        return None
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        same = a.shape == b.shape and a.dtype == b.dtype and torch.equal(
            a.detach().cpu().contiguous().reshape(-1).view(torch.uint8),
            b.detach().cpu().contiguous().reshape(-1).view(torch.uint8))
        return None if same else f"{where}: tensors differ"
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return None if a.shape == b.shape and a.tobytes() == b.tobytes() \
            else f"{where}: arrays differ"
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return None
    return None if type(a) is type(b) and a == b else f"{where}: {a!r} != {b!r}"
