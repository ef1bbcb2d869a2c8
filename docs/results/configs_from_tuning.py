"""Write the real-data test matrices from the tuning's choice, so data flows one way:
validation tuning (results/thesis-cub-subset-val-tune/tuned.yaml) -> these configs -> the
test stores -> docs/results.

    .venv/bin/python docs/results/configs_from_tuning.py [TUNED_YAML]

writes configs/thesis-cub-subset.yaml (5 test seeds), configs/thesis-cub-subset-ablations.yaml
(fecd's and dkd's ablations at the tuned values), configs/thesis-lifelong.yaml (the shipped
dataset order, 5 seeds) and configs/thesis-lifelong-orders.yaml (two more orders, 3 seeds).
Every file says which tuning it came from; the protocol (slow trunk, budget, resolution) is
the one chosen on the validation split (docs/results/protocol-choice.md).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
TUNED = ROOT / "results" / "thesis-cub-subset-val-tune" / "tuned.yaml"

MODEL = "model: {trunk: mobilenet_v2, pretrained: true, frozen_stages: 14, dim: 512, pool: max}"
CACHE = "cache: {features: true, views: 2}"
EVAL = "evaluation: {ks: [1, 2, 4, 8], map_at_r: true, cross_model: false}"


def training(iterations: int) -> str:
    """The chosen protocol's training block (lr 3e-4 on the new layers, the trunk at 0.1x)."""
    return (f"training: {{p: 8, k: 4, iterations: {iterations}, optimizer: adam, lr: 0.0003, "
            "trunk_lr_mult: 0.1,\n           eval_mb_size: 256, channels_last: true}")


def flow(params: dict[str, Any]) -> str:
    """One strategy entry as a YAML flow mapping (full float precision)."""
    if not params:
        return "{}"
    return "{" + ", ".join(f"{k}: {v!r}" if not isinstance(v, str) else f"{k}: {v}"
                           for k, v in params.items()) + "}"


def strategies_block(chosen: dict[str, dict[str, Any]], notes: dict[str, str]) -> str:
    lines = ["strategies:"]
    for label, params in chosen.items():
        note = f"   # {notes[label]}" if label in notes else ""
        lines.append(f"  {label}: {flow(params or {})}{note}")
    return "\n".join(lines)


NOTES = {"pretrained": "the untrained model: the reference every method must beat",
         "first_session": "trains the first experience, then frozen"}
REPLAY_CUB = "a stated budget: 3 images per class once all 100 are seen"


def header(what: str, source: str, seeds_tuned: list[int], extra: str = "") -> str:
    return (f"# {what}\n"
            "# Written by docs/results/configs_from_tuning.py from\n"
            f"# {source}: every strategy's values were chosen on the\n"
            f"# validation split with seeds {seeds_tuned}, which this matrix does not use.\n"
            "# The protocol (slow trunk: trunk_lr_mult 0.1, budget, 160 px) was chosen on the\n"
            "# validation split too: docs/results/protocol-choice.md.\n"
            + extra)


def ablations(chosen: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    fecd, dkd = dict(chosen["fecd"]), dict(chosen["dkd"])
    return {
        "finetune": {},
        "fecd": fecd,
        "fecd-no-est": {"strategy": "fecd", **fecd, "lambda_est": 0.0},
        "fecd-est-as-teacher": {"strategy": "fecd", **fecd, "estimation": "teacher"},
        "fecd-bn-frozen": {"strategy": "fecd", **fecd, "freeze_student_bn": True},
        "dkd": dkd,
        "dkd-noise": {"strategy": "dkd", **dkd, "synthetic": "noise"},
        "dkd-no-synth": {"strategy": "dkd", **dkd, "lambda_inv": 0.0},
        "dkd-bn-frozen": {"strategy": "dkd", **dkd, "freeze_student_bn": True},
    }


def write(path: Path, text: str) -> None:
    yaml.safe_load(text)  # a typo here must not reach a 2-hour run
    path.write_text(text)
    print(f"wrote {path.relative_to(ROOT)}")


def main(tuned_path: Path = TUNED) -> None:
    tuned = yaml.safe_load(tuned_path.read_text())
    chosen: dict[str, dict[str, Any]] = {k: dict(v or {}) for k, v in
                                         tuned["strategies"].items()}
    seeds_tuned = list(tuned.get("tuned_on_seeds") or [100, 101])
    src = "results/thesis-cub-subset-val-tune/tuned.yaml"
    tuned_line = f"tuned_on_seeds: {seeds_tuned}\n"
    common = "\n".join([MODEL, training(200), CACHE])
    write(ROOT / "configs" / "thesis-cub-subset.yaml", "\n".join([
        header("The CUB test matrix: every strategy at its tuned values, 5 test seeds.", src,
               seeds_tuned),
        "name: thesis-cub-subset", "seeds: [0, 1, 2, 3, 4]", tuned_line.rstrip(),
        "scenarios:", "  - {protocol: cub-subset-50+5x10, image_size: 160}", common,
        strategies_block(chosen, {**NOTES, "replay": REPLAY_CUB}), EVAL, ""]))
    write(ROOT / "configs" / "thesis-cub-subset-ablations.yaml", "\n".join([
        header("Ablations of fecd and dkd at their tuned values (the CUB test protocol).",
               src, seeds_tuned),
        "name: thesis-cub-subset-ablations", "seeds: [0, 1, 2, 3, 4]", tuned_line.rstrip(),
        "scenarios:", "  - {protocol: cub-subset-50+5x10, image_size: 160}", common,
        strategies_block(ablations(chosen), {}), EVAL, ""]))
    lifelong = "\n".join([MODEL, training(300), CACHE])
    extra = ("# The lifelong stream reuses the CUB choice (no validation split of its own):\n"
             "# 300 steps per experience, as the protocol screen ran it.\n")
    write(ROOT / "configs" / "thesis-lifelong.yaml", "\n".join([
        header("The lifelong stream Flowers-102 -> CUB -> Omniglot, 5 test seeds.", src,
               seeds_tuned, extra),
        "name: thesis-lifelong", "seeds: [0, 1, 2, 3, 4]", tuned_line.rstrip(),
        "scenarios:", "  - name: lifelong-flowers-cub-omniglot",
        "    datasets: [flowers102, cub200, omniglot]", "    image_size: 160", lifelong,
        strategies_block(chosen, NOTES), EVAL, ""]))
    write(ROOT / "configs" / "thesis-lifelong-orders.yaml", "\n".join([
        header("The lifelong stream in two more dataset orders (3 seeds each): one order\n"
               "# alone confounds a method with the order.", src, seeds_tuned, extra),
        "name: thesis-lifelong-orders", "seeds: [0, 1, 2]", tuned_line.rstrip(),
        "scenarios:", "  - name: lifelong-cub-omniglot-flowers",
        "    datasets: [cub200, omniglot, flowers102]", "    image_size: 160",
        "  - name: lifelong-omniglot-flowers-cub",
        "    datasets: [omniglot, flowers102, cub200]", "    image_size: 160", lifelong,
        strategies_block(chosen, NOTES), EVAL, ""]))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else TUNED)
