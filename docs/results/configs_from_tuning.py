"""Write the real-data test matrices from the tuning's choice, so data flows one way:
validation tuning store (results/thesis-cub-subset-val-tune/tuned.yaml) -> its committed
copy (docs/results/tuning/tuned.yaml, made by regenerate.sh) -> these configs -> the test
stores -> docs/results.

    .venv/bin/python docs/results/configs_from_tuning.py [TUNED_YAML [MORE_TUNED_YAML]]

writes configs/thesis-cub-subset.yaml (5 test seeds), configs/thesis-cub-subset-ablations.yaml
(fecd's and dkd's ablations at the tuned values), configs/thesis-lifelong.yaml (the shipped
dataset order, 5 seeds), configs/thesis-lifelong-orders.yaml (two more orders, 3 seeds) and
configs/thesis-cub-subset-confirm.yaml (the dkd-bn-frozen lead on 5 new seeds).
Without arguments it reads the committed copies; the second tuning's
(docs/results/tuning-more/tuned.yaml, from configs/thesis-cub-subset-val-more.yaml: bct,
drift compensation, the rehearsal methods, the statistics-only baselines; same stream,
split, seeds and trial budget) joins every matrix once it exists. Every file says which
tuning it came from; the protocol (slow trunk, budget, resolution) is the one chosen on the
validation split (docs/results/protocol-choice.md).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
# the committed copies regenerate.sh makes of the tuning stores' tuned.yaml (the files
# tests/test_real_configs.py checks these matrices against)
TUNED = ROOT / "docs" / "results" / "tuning" / "tuned.yaml"
TUNED_MORE = ROOT / "docs" / "results" / "tuning-more" / "tuned.yaml"

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
       "# drawing its own class order; 200 steps of 32 images per experience (6,400 draws:\n"
       "# about 21 passes over a 10-class task's 300 images, 4 over the 1,500 base images).\n")
BUFFER_CUB = "a stated budget: 300 images, 3 per class once all 100 are seen"
BUFFERS = ("replay", "replay-herding", "der", "er_aml")
ABLATIONS = ("# Each variant is the tuned method with one setting changed (a test checks it);\n"
             "# finetune, fecd and dkd are the test matrix's own cells (same config hash).\n"
             "#   LRBENCH_DATA=../shared/data lrbench run configs/thesis-cub-subset-ablations.yaml"
             " --jobs 2\n")
ABLATION_NOTES = {
    "fecd-no-est": "the estimation term removed: is it anything but extra weight?",
    "fecd-est-as-teacher": "its weight moved onto the teacher term instead",
    "fecd-bn-frozen": "the student's BatchNorm statistics frozen from experience 2 (the thesis)",
    "dkd-noise": "synthetic inputs replaced by Gaussian noise of their mean and variance",
    "dkd-no-synth": "no synthetic term: do the BatchNorm statistics carry old knowledge?",
    "dkd-bn-frozen": "the student's BatchNorm statistics frozen from experience 2 (the thesis)",
}


PROTOCOL = """\
# CPU protocol (docs/results/protocol-choice.md chose it on the validation split):
# * ImageNet MobileNetV2 with blocks 0-13 frozen (frozen_stages: 14): their output
#   (96 x 10 x 10 per image and view at 160 px, 2 views) is computed once into the feature
#   cache; blocks 14-18, the pooling and the 512-d embedding train.
# * A slow trunk (SLCA's finding): Adam at lr 3e-4 on the new layers, 0.1x on the
#   pretrained blocks (trunk_lr_mult: 0.1); P x K = 8 x 4 per step.
# * channels_last: the trained blocks run in the NHWC layout (about 30% off a CPU step,
#   numbers equal up to rounding).
"""
REFERENCES = ("# pretrained (the untrained model, its pooled 1280-d features) and\n"
              "# first_session run beside every method: the references a continual method\n"
              "# must beat.\n")


def header(what: str, source: str, seeds_tuned: list[int], extra: str = "") -> str:
    return (f"# {what}\n"
            "# Written by docs/results/configs_from_tuning.py from\n"
            f"# {source}: every strategy's values were chosen on the\n"
            f"# validation split with seeds {seeds_tuned}, which this matrix does not use\n"
            "# (lrbench run refuses them: tuned_on_seeds).\n"
            + PROTOCOL + extra).rstrip("\n")


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


#: seeds no run behind docs/results has used (test seeds 0-4, tuning seeds 100 and 101)
CONFIRM_SEEDS = (5, 6, 7, 8, 9)
CONFIRM = ("# Its claim (docs/examples/claims-confirm.yaml: the variant above the untrained\n"
           "# model on final seen Recall@1, paired by seed) was declared before these seeds\n"
           "# ran; no other cell uses them, so the test is not the one that found the lead.\n"
           "#   LRBENCH_DATA=../shared/data lrbench run configs/thesis-cub-subset-confirm.yaml"
           " --jobs 2\n")


def confirm(chosen: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The confirmatory matrix: the untrained reference and the ablation variant."""
    return {"pretrained": {}, "dkd-bn-frozen": ablations(chosen)["dkd-bn-frozen"]}


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
        # a tuned.yaml written before tuned_on_seeds existed kept the tuning's seeds
        these = sorted(tuned.get("tuned_on_seeds") or tuned["seeds"])
        if seeds is not None and these != seeds:
            raise SystemExit(f"{path} was tuned on seeds {these}, not {seeds}")
        seeds = these
        for label, params in tuned["strategies"].items():
            if label in chosen:
                raise SystemExit(f"{label} is tuned in more than one of {paths}")
            chosen[label] = dict(params or {})
    assert seeds is not None, "no tuned.yaml given"
    return chosen, seeds


def shown(path: Path) -> str:
    """``path`` as the headers name it: relative to the repository, or as
    results/<store>/tuned.yaml for a store outside it."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return f"results/{path.parent.name}/{path.name}"


def main(paths: list[Path] | None = None) -> None:
    """Write the five matrices from ``paths`` (tuned.yaml files; by default the committed
    copies, the second only once it exists)."""
    if paths is None:
        paths = [TUNED] + ([TUNED_MORE] if TUNED_MORE.is_file() else [])
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise SystemExit(f"configs_from_tuning: no such tuned.yaml: {', '.join(missing)}")
    chosen, seeds_tuned = chosen_values(paths)
    src = " and\n# ".join(shown(p) for p in paths)
    notes = {**NOTES, **{b: BUFFER_CUB for b in BUFFERS}}
    tuned_line = f"tuned_on_seeds: {seeds_tuned}\n"
    common = "\n".join([MODEL, training(200), CACHE])
    write(ROOT / "configs" / "thesis-cub-subset.yaml", "\n".join([
        header("The CUB test matrix: every strategy at its tuned values, 5 test seeds.", src,
               seeds_tuned, CUB + REFERENCES + "#   LRBENCH_DATA=../shared/data lrbench run "
               "configs/thesis-cub-subset.yaml --jobs 2\n"),
        "name: thesis-cub-subset", "seeds: [0, 1, 2, 3, 4]", tuned_line.rstrip(),
        "scenarios:", "  - {protocol: cub-subset-50+5x10, image_size: 160}", common,
        strategies_block(chosen, notes), EVAL, ""]))
    write(ROOT / "configs" / "thesis-cub-subset-ablations.yaml", "\n".join([
        header("Ablations of fecd and dkd at their tuned values (the CUB test protocol).",
               src, seeds_tuned, CUB + ABLATIONS),
        "name: thesis-cub-subset-ablations", "seeds: [0, 1, 2, 3, 4]", tuned_line.rstrip(),
        "scenarios:", "  - {protocol: cub-subset-50+5x10, image_size: 160}", common,
        strategies_block(ablations(chosen), ABLATION_NOTES), EVAL, ""]))
    lifelong = "\n".join([MODEL, training(300), CACHE])
    extra = ("# Data: Flowers-102, CUB-200 and Omniglot of $LRBENCH_DATA, one experience per\n"
             "# dataset (100-240 classes each), where the semantic shift between experiences\n"
             "# is largest (the setting DKD was made for). It reuses the CUB choice (no\n"
             "# validation split of its own): 300 steps per experience, as the protocol\n"
             "# screen ran it.\n")
    write(ROOT / "configs" / "thesis-lifelong.yaml", "\n".join([
        header("The lifelong stream Flowers-102 -> CUB -> Omniglot, 5 test seeds.", src,
               seeds_tuned, extra + REFERENCES + "#   LRBENCH_DATA=../shared/data lrbench run "
               "configs/thesis-lifelong.yaml --jobs 2\n"),
        "name: thesis-lifelong", "seeds: [0, 1, 2, 3, 4]", tuned_line.rstrip(),
        "scenarios:", "  - name: lifelong-flowers-cub-omniglot",
        "    datasets: [flowers102, cub200, omniglot]", "    image_size: 160", lifelong,
        strategies_block(chosen, notes), EVAL, ""]))
    write(ROOT / "configs" / "thesis-lifelong-orders.yaml", "\n".join([
        header("The lifelong stream in two more dataset orders (3 seeds each): one order\n"
               "# alone confounds a method with the order.", src, seeds_tuned,
               extra + REFERENCES + "#   LRBENCH_DATA=../shared/data lrbench run "
               "configs/thesis-lifelong-orders.yaml --jobs 2\n"),
        "name: thesis-lifelong-orders", "seeds: [0, 1, 2]", tuned_line.rstrip(),
        "scenarios:", "  - name: lifelong-cub-omniglot-flowers",
        "    datasets: [cub200, omniglot, flowers102]", "    image_size: 160",
        "  - name: lifelong-omniglot-flowers-cub",
        "    datasets: [omniglot, flowers102, cub200]", "    image_size: 160", lifelong,
        strategies_block(chosen, notes), EVAL, ""]))
    write(ROOT / "configs" / "thesis-cub-subset-confirm.yaml", "\n".join([
        header("A confirmatory run of the one lead the ablations left: dkd with its student's\n"
               "# BatchNorm statistics frozen ended above the untrained model on seeds 0-4.",
               src, seeds_tuned, CUB + CONFIRM),
        "name: thesis-cub-subset-confirm", f"seeds: {list(CONFIRM_SEEDS)}",
        tuned_line.rstrip(), "scenarios:",
        "  - {protocol: cub-subset-50+5x10, image_size: 160}", common,
        strategies_block(confirm(chosen), {**NOTES, **ABLATION_NOTES}), EVAL, ""]))


if __name__ == "__main__":
    if len(sys.argv) > 3:
        raise SystemExit("usage: configs_from_tuning.py [TUNED_YAML [MORE_TUNED_YAML]]")
    main([Path(a) for a in sys.argv[1:]] or None)
