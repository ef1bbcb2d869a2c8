"""The GPU check (``tools/gpu-check.sh``, ``make gpu-check``): the CUDA path end to end, in
at most 8 minutes on one H100, as one table.

Rows, each timed (a check that would start after the time budget is skipped):

1. **contract** -- the contract kit (:mod:`benchmarks.contract`) on ``cuda``: ``finetune``
   and ``fecd`` (a teacher and random feature estimates on the device) train, evaluate,
   repeat under a seed and resume from a checkpoint to identical numbers;
2. **engine** -- the Recall@K engine (:mod:`metrics.retrieval`) on N = 100k clustered
   embeddings of d = 512 on the GPU against the same on the CPU (equal up to float
   rounding: at most :data:`ENGINE_TOL` apart, a few near-ties among 100k queries), and its
   time against one N x N matmul on the GPU;
3. **bf16** -- a two-cell matrix on real data (the CUB subset of ``$LRBENCH_DATA``,
   20+2x10 classes at 224 px, ImageNet MobileNetV2 when its weights are here) on ``cuda``,
   fine-tuning with bfloat16 autocast (``training.amp``) and without: final Recall@1 on the
   seen-classes gallery at most :data:`AMP_TOL` apart;
4. **resume** -- the same matrix's float32 cell run with ``--checkpoints`` in a process
   killed with SIGKILL once its first checkpoint is written, then rerun: its result must
   equal an uninterrupted run's, value for value (checkpoints hold the CUDA generators'
   states; cuDNN runs deterministically on CUDA);
5. **images/s** -- a training step (forward, backward, Adam) of BN-Inception and
   MobileNetV2 on 80 images of 224 px: the GPU in float32 and bfloat16, this host's CPU,
   and the development machine's CPU as recorded in ``docs/results/gpu/cpu-reference.json``.

Without a CUDA device it prints "no CUDA device" and exits 0; the checks themselves take a
``device`` and are tested on the CPU. ``--out FILE`` also writes the table as Markdown
(the committed runs are in ``docs/results/gpu/``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CPU_REFERENCE = REPO / "docs" / "results" / "gpu" / "cpu-reference.json"
BUDGET_S = 480
ENGINE_TOL = 1e-4
AMP_TOL = 0.03
KS = (1, 2, 4, 8)


@dataclass
class Row:
    """One line of the table."""

    check: str
    status: str  # ok, FAIL, skipped
    result: str
    seconds: float = 0.0


def clustered_embeddings(n: int, d: int = 512, per_class: int = 20, seed: int = 0
                         ) -> tuple[Any, Any]:
    """L2-normalised clustered embeddings and labels (as the perf suite draws them)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    classes = max(1, n // per_class)
    centres = torch.randn(classes, d, generator=g)
    labels = torch.randint(0, classes, (n,), generator=g)
    x = centres[labels] + 0.8 * torch.randn(n, d, generator=g)
    return torch.nn.functional.normalize(x, dim=1), labels


def _timed(fn: Callable[[], Any], device: str, repeats: int = 3) -> tuple[Any, float]:
    """``fn``'s result and its median time over ``repeats`` after one warm-up."""
    import statistics

    import torch

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    out = fn()
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


def check_contract(device: str, names: Sequence[str] = ("finetune", "fecd")) -> Row:
    """Row 1: the contract kit on ``device``."""
    from benchmarks.contract import check_strategy

    done = [f"{name} {len(check_strategy(name, device=device).checks)} checks"
            for name in names]
    return Row("contract kit", "ok", f"{', '.join(done)} passed on {device}")


def check_engine(device: str, n: int = 100_000, d: int = 512) -> Row:
    """Row 2: Recall@K on ``device`` against the CPU, and its time against one matmul."""
    import torch

    from metrics.retrieval import evaluate_retrieval

    x, y = clustered_embeddings(n, d)
    cpu = evaluate_retrieval(x, y, KS).recall
    xd, yd = x.to(device), y.to(device)
    dev, t_engine = _timed(lambda: evaluate_retrieval(xd, yd, KS).recall, device)
    diff = max(abs(cpu[k] - dev[k]) for k in KS)
    free = torch.cuda.mem_get_info()[0] if device.startswith("cuda") else 0
    blocks = 1 if free > 1.2 * 4 * n * n else 8  # N x N floats: 40 GB at 100k

    def matmul() -> None:
        for rows in xd.chunk(blocks):
            rows @ xd.T

    _, t_mm = _timed(matmul, device)
    status = "ok" if diff <= ENGINE_TOL else "FAIL"
    return Row("Recall@K engine", status,
               f"N={n:,}, d={d}: R@1 {dev[1]:.4f} on {device}, {cpu[1]:.4f} on cpu (max "
               f"|diff| over K {diff:.1e}, tolerance {ENGINE_TOL:g}); {t_engine:.2f} s vs "
               f"{t_mm:.2f} s for one N x N matmul{'' if blocks == 1 else ' (8 blocks)'} "
               f"({t_engine / t_mm:.1f}x)")


def _weights_here() -> bool:
    from strategies.weights import WeightsError, resolve

    try:
        return resolve("mobilenet_v2").cached() is not None
    except WeightsError:
        return False


def small_matrix(device: str, data: str | None, name: str, amp_variant: bool,
                 iterations: int = 40) -> dict[str, Any]:
    """The real-data matrix of rows 3 and 4 (synth-fg when ``data`` is None: tests)."""
    if data:
        scenario = {"name": "cub-subset-20+2x10", "dataset": "cub200", "schedule": "20+2x10",
                    "order": "sorted", "image_size": 224}
        model = {"trunk": "mobilenet_v2", "pretrained": _weights_here(), "dim": 512,
                 "pool": "max", "freeze_bn": True}
        training = {"p": 8, "k": 4, "iterations": iterations, "lr": 0.0001,
                    "eval_mb_size": 256, "channels_last": True}
    else:
        scenario = {"name": "synth-tiny", "dataset": "synth-fg", "schedule": "4+4+4",
                    "image_size": 32, "dataset_kwargs": {
                        "num_classes": 12, "train_per_class": 10, "test_per_class": 6}}
        model = {"trunk": "small_cnn", "dim": 32, "pool": "avg"}
        training = {"p": 4, "k": 3, "iterations": iterations, "lr": 0.002}
    strategies: dict[str, Any] = {"finetune": {}}
    if amp_variant:
        strategies["finetune-bf16"] = {"strategy": "finetune", "training": {"amp": True}}
    return {"name": name, "seeds": [0], "data_root": data, "scenarios": [scenario],
            "model": model, "training": {**training, "device": device},
            "cache": {"images": bool(data)}, "strategies": strategies,
            "evaluation": {"ks": list(KS), "map_at_r": False}}


def _results(store: Path) -> dict[str, dict[str, Any]]:
    from benchmarks.run.store import read_result

    out = {}
    for path in sorted(store.glob("cells/*/result.json")):
        result = read_result(path)
        if result is not None:
            out[result["config"]["strategy"]] = result
    return out


def check_amp(device: str, data: str | None, work: Path) -> Row:
    """Row 3: the two-cell matrix with bfloat16 autocast on and off."""
    from benchmarks.config import parse_config
    from benchmarks.runner import run_matrix

    config = parse_config(small_matrix(device, data, "gpu-check-bf16", True))
    counts = run_matrix(config, work / "bf16", progress=False)
    cells = _results(work / "bf16")
    if counts["failed"] or len(cells) != 2:
        reason = "; ".join(str(r.get("reason")) for r in cells.values() if r.get("reason"))
        return Row("bf16 autocast", "FAIL", f"{counts['failed']} cell(s) failed: {reason}")
    fp32 = cells["finetune"]["payload"]["summary"]["final_seen"]
    bf16 = cells["finetune-bf16"]["payload"]["summary"]["final_seen"]
    diff = abs(fp32 - bf16)
    what = config.scenarios[0].name
    weights = "ImageNet MobileNetV2" if config.model.pretrained else config.model.trunk
    return Row("bf16 autocast", "ok" if diff <= AMP_TOL else "FAIL",
               f"{what}, {weights}, 2 cells on {device}: final seen R@1 {fp32:.4f} float32, "
               f"{bf16:.4f} bfloat16 (|diff| {diff:.4f}, tolerance {AMP_TOL})")


def _lrbench(*args: str, **kw: Any) -> subprocess.Popen:
    env = {**os.environ, "CUBLAS_WORKSPACE_CONFIG": os.environ.get(
        "CUBLAS_WORKSPACE_CONFIG", ":4096:8")}
    return subprocess.Popen([sys.executable, "-m", "benchmarks", "run", *args], cwd=REPO,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, **kw)


def _run(*args: str) -> None:
    proc = _lrbench(*args)
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"lrbench run {' '.join(args)} exited {proc.returncode}: "
                           f"{(err or '').strip().splitlines()[-1:]}")


def check_resume(device: str, data: str | None, work: Path, wait_s: float = 300) -> Row:
    """Row 4: kill -9 after the first checkpoint, resume, compare with an uninterrupted run."""
    import yaml

    matrix = work / "resume.yaml"
    matrix.write_text(yaml.safe_dump(small_matrix(device, data, "gpu-check-resume", False),
                                     sort_keys=False))
    _run(str(matrix), "--out", str(work / "whole"))
    killed = work / "killed"
    proc = _lrbench(str(matrix), "--out", str(killed), "--checkpoints")
    t0, when = time.monotonic(), "after it finished (the kill came too late)"
    while proc.poll() is None and time.monotonic() - t0 < wait_s:
        if list(killed.glob("cells/*/checkpoint.pt")):
            os.killpg(proc.pid, signal.SIGKILL)
            when = "after its first checkpoint"
            break
        time.sleep(0.05)
    proc.wait()
    _run(str(matrix), "--out", str(killed), "--checkpoints")
    a, b = _results(work / "whole")["finetune"], _results(killed)["finetune"]
    same = all(a["payload"][k] == b["payload"][k] for k in ("r_matrix", "seen", "losses"))
    resumed = b["payload"]["timings"].get("resumed_after", 0)
    detail = (f"killed with SIGKILL {when}, resumed after {resumed} of "
              f"{a['payload']['num_experiences']} experiences on {device}: ")
    if same:
        return Row("kill -9 + resume", "ok", detail + "R matrices, curves and losses identical "
                   "to an uninterrupted run")
    import numpy as np

    ra = np.array(a["payload"]["r_matrix"]["recall"]["1"], dtype=float)
    rb = np.array(b["payload"]["r_matrix"]["recall"]["1"], dtype=float)
    return Row("kill -9 + resume", "FAIL", detail + "differs from an uninterrupted run (max "
               f"|diff| of R@1 {np.nanmax(np.abs(ra - rb)):.2e})")


def check_speed(device: str, batch: int = 80, size: int = 224,
                trunks: Sequence[str] = ("bninception", "mobilenet_v2")) -> Row:
    """Row 5: images/s of a training step on ``device`` (float32, bfloat16) and the CPUs."""
    import torch

    from benchmarks.run.estimate import step_rate
    from strategies.model import EmbeddingNet
    from strategies.template import torch_threads

    recorded = json.loads(CPU_REFERENCE.read_text()) if CPU_REFERENCE.is_file() else {}
    parts = []
    for trunk in trunks:
        torch.manual_seed(0)
        model = EmbeddingNet(trunk, dim=512).to(device, memory_format=torch.channels_last)
        x = torch.randn(batch, 3, size, size, device=device).contiguous(
            memory_format=torch.channels_last)
        fp32 = step_rate(model, x, repeats=5)
        text = f"{trunk}: {fp32:.0f} float32"
        if device.startswith("cuda"):
            bf16 = step_rate(model, x, repeats=5, autocast=lambda: torch.autocast(
                "cuda", dtype=torch.bfloat16))
            text += f", {bf16:.0f} bfloat16"
        cpu_model = EmbeddingNet(trunk, dim=512)
        with torch_threads(os.cpu_count() or 1):
            host = step_rate(cpu_model, torch.randn(min(batch, 16), 3, size, size))
        text += f" on {device}; {host:.1f} on this host's CPU ({os.cpu_count()} threads)"
        ref = recorded.get("rates", {}).get(trunk)
        if ref:
            text += (f", {ref:.1f} on the development machine's CPU "
                     f"({recorded.get('threads')} threads): {fp32 / ref:,.0f}x")
        parts.append(text)
    return Row("training images/s", "ok", f"{batch} images of {size} px, Adam; "
               + "; ".join(parts))


def run_checks(device: str = "cuda", data: str | None = None, work: Path | None = None,
               budget_s: float = BUDGET_S,
               log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> list[Row]:
    """Every row, in order, each caught (a failure is a row, the others still run)."""
    work = work or Path(tempfile.mkdtemp(prefix="lrbench-gpu-check-"))
    checks: list[tuple[str, Callable[[], Row]]] = [
        ("contract kit", lambda: check_contract(device)),
        ("Recall@K engine", lambda: check_engine(device)),
        ("bf16 autocast", lambda: check_amp(device, data, work)),
        ("kill -9 + resume", lambda: check_resume(device, data, work)),
        ("training images/s", lambda: check_speed(device)),
    ]
    rows, start = [], time.monotonic()
    for name, fn in checks:
        if name in ("bf16 autocast", "kill -9 + resume") and not data:
            rows.append(Row(name, "skipped", "no real data: set $LRBENCH_DATA (or --data) to "
                            "the folder holding CUB_200_2011"))
            continue
        if time.monotonic() - start > budget_s:
            rows.append(Row(name, "skipped", f"the {budget_s:.0f} s budget is spent"))
            continue
        log(f"gpu-check: {name} ...")
        t0 = time.monotonic()
        try:
            row = fn()
        except Exception as exc:  # a failed check is a row of the table
            row = Row(name, "FAIL", f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
        row.seconds = time.monotonic() - t0
        rows.append(row)
    return rows


def table(rows: Sequence[Row]) -> str:
    """The rows as one Markdown table."""
    lines = ["| check | status | result | s |", "|---|---|---|---:|"]
    lines += [f"| {r.check} | {r.status} | {r.result.replace('|', '/')} | {r.seconds:.0f} |"
              for r in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``tools/gpu-check.sh``: 0 when every check passed (or no CUDA)."""
    parser = argparse.ArgumentParser(prog="gpu-check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.environ.get("LRBENCH_DATA"),
                        help="real data root (default $LRBENCH_DATA)")
    parser.add_argument("--out", help="also write the table (Markdown) to this file")
    parser.add_argument("--device", default="cuda", help="CUDA device (default cuda)")
    parser.add_argument("--budget", type=float, default=BUDGET_S,
                        help=f"seconds after which no further check starts ({BUDGET_S})")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device: the GPU check needs one; nothing was run")
        return 0
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    rows = run_checks(args.device, args.data, budget_s=args.budget)
    name = torch.cuda.get_device_name(torch.device(args.device))
    head = (f"GPU check, {time.strftime('%Y-%m-%d %H:%M')}: {name}, torch {torch.__version__}, "
            f"CUDA {torch.version.cuda}, {os.cpu_count()} CPUs")
    text = f"{head}\n\n{table(rows)}\n"
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    return 0 if all(r.status != "FAIL" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
