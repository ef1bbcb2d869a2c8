"""Write the real-data test matrices from the tuning's choice, so data flows one way:
validation tuning (results/thesis-cub-subset-val-tune/tuned.yaml) -> these configs -> the
test stores -> docs/results.

    .venv/bin/python docs/results/configs_from_tuning.py [TUNED_YAML [MORE_TUNED_YAML]]

writes configs/thesis-cub-subset.yaml (5 test seeds), configs/thesis-cub-subset-ablations.yaml
(fecd's and dkd's ablations at the tuned values), configs/thesis-lifelong.yaml (the shipped
dataset order, 5 seeds) and configs/thesis-lifelong-orders.yaml (two more orders, 3 seeds).
The strategies of the second tuning (configs/thesis-cub-subset-val-more.yaml: bct, drift
compensation, the rehearsal methods, the statistics-only baselines; same stream, split,
seeds and trial budget) join every matrix once its tuned.yaml exists. Every file says which
tuning it came from; the protocol (slow trunk, budget, resolution) is
the one chosen on the validation split (docs/results/protocol-choice.md).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
TUNED = ROOT / "results" / "thesis-cub-subset-val-tune" / "tuned.yaml"
TUNED_MORE = ROOT / "results" / "thesis-cub-subset-val-more-tune" / "tuned.yaml"

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
CUB = ("# Data: the real CUB subset of $LRBENCH_DATA (../shared/data here), official split\n"
       "# (2,999 train / 2,903 test images), 50 base classes then 5 tasks of 10, each seed\n"
       "# drawing its own class order; 200 steps per experience (about 2 passes over a\n"
       "# 10-class task's 300 images).\n")
REPLAY_CUB = "a stated budget: 3 images per class once all 100 are seen"


PROTOCOL = """\
# CPU protocol (docs/results/protocol-choice.md chose it on the validation split):
# * ImageNet MobileNetV2 with blocks 0-13 frozen (frozen_stages: 14): their output
#   (96 x 10 x 10 per image and view at 160 px, 2 views) is computed once into the feature
#   cache; blocks 14-18, the pooling and the 512-d embedding train.
# * A slow trunk (SLCA's finding): Adam at lr 3e-4 on the new layers, 0.1x on the
#   pretrained blocks (trunk_lr_mult: 0.1); P x K = 8 x 4 per step.
# * channels_last: the trained blocks run in the NHWC layout (about 30% off a CPU step,
#   numbers equal up to rounding).
# * pretrained (the untrained model, its pooled 1280-d features) and first_session run
#   beside every method: the reference a continual method must beat.
"""


def header(what: str, source: str, seeds_tuned: list[int], extra: str = "") -> str:
    return (f"# {what}\n"
            "# Written by docs/results/configs_from_tuning.py from\n"
            f"# {source}: every strategy's values were chosen on the\n"
            f"# validation split with seeds {seeds_tuned}, which this matrix does not use\n"
            "# (lrbench run refuses them: tuned_on_seeds).\n"
            + PROTOCOL + extra)


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


def chosen_values(paths: list[Path]) -> tuple[dict[str, dict[str, Any]], list[int]]:
    """label -> its entry in the tuned matrices (in order), and the seeds they were tuned
    on, which must be the same for all of them (one validation protocol)."""
    chosen: dict[str, dict[str, Any]] = {}
    seeds: list[int] | None = None
    for path in paths:
        tuned = yaml.safe_load(path.read_text())
        these = list(tuned.get("tuned_on_seeds") or [100, 101])
        if seeds is not None and these != seeds:
            raise SystemExit(f"{path} was tuned on seeds {these}, not {seeds}")
        seeds = these
        for label, params in tuned["strategies"].items():
            if label in chosen:
                raise SystemExit(f"{label} is tuned in more than one of {paths}")
            chosen[label] = dict(params or {})
    return chosen, seeds or [100, 101]


def main(tuned_path: Path = TUNED, more_path: Path | None = TUNED_MORE) -> None:
    paths = [tuned_path] + ([more_path] if more_path is not None and more_path.is_file()
                            else [])
    chosen, seeds_tuned = chosen_values(paths)
    src = " and\n# ".join(f"results/{p.parent.name}/{p.name}" for p in paths)
    tuned_line = f"tuned_on_seeds: {seeds_tuned}\n"
    common = "\n".join([MODEL, training(200), CACHE])
    write(ROOT / "configs" / "thesis-cub-subset.yaml", "\n".join([
        header("The CUB test matrix: every strategy at its tuned values, 5 test seeds.", src,
               seeds_tuned, CUB + "#   LRBENCH_DATA=../shared/data lrbench run "
               "configs/thesis-cub-subset.yaml --jobs 2\n"),
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
    extra = ("# Data: Flowers-102, CUB-200 and Omniglot of $LRBENCH_DATA, one experience per\n"
             "# dataset (100-240 classes each), where the semantic shift between experiences\n"
             "# is largest (the setting DKD was made for). It reuses the CUB choice (no\n"
             "# validation split of its own): 300 steps per experience, as the protocol\n"
             "# screen ran it.\n")
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
    args = [Path(a) for a in sys.argv[1:3]]
    main(*args) if args else main()
