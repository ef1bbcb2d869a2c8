"""The protocol screen's table, generated from its stores (docs/results/protocol-choice.md).

For each setting (a matrix beside this file, run into results/protocol-choice/<setting>):
the untrained model, first-session adaptation, fine-tuning and joint training on the
validation split, one seed; the margin joint - pretrained on the final seen Recall@1 and
fine-tuning's forgetting, the two numbers a protocol must clear. Writes screen.csv and
screen.md here.
    python docs/results/protocol-choice/table.py [STORES_ROOT]
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository's metrics
HERE = Path(__file__).resolve().parent
ROOT = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parents[2] / "results" / "protocol-choice"
STRATEGIES = ("pretrained", "first_session", "finetune", "joint")


def describe(matrix: dict) -> dict[str, str]:
    sc, tr = matrix["scenarios"][0], matrix["training"]
    return {"stream": sc["protocol"], "image_size": str(sc.get("image_size", "")),
            "pool": matrix["model"]["pool"], "steps": str(tr["iterations"]),
            "lr": f"{tr['lr']:g}", "trunk_lr_mult": f"{tr.get('trunk_lr_mult', 1.0):g}"}


def interval(values: list[float]) -> str:
    """``mean [low, high]`` (95% Student-t over seeds), or the value alone for one seed."""
    from metrics.statistics import t_interval

    mean = sum(values) / len(values)
    low, high = t_interval(values)
    return f"{mean:+.3f}" + (f" [{low:+.3f}, {high:+.3f}]" if len(values) > 1 else "")


rows = []
for path in sorted(HERE.glob("*.yaml")):
    matrix = yaml.safe_load(path.read_text())
    store = ROOT / path.stem
    values: dict[str, dict[int, dict]] = {}
    for cell in sorted((store / "cells").glob("*/result.json")):
        result = json.loads(cell.read_text())
        if result.get("status") == "finished" and result["config"]["seed"] in matrix["seeds"]:
            values.setdefault(result["config"]["strategy"], {})[result["config"]["seed"]] = \
                result["payload"]
    seeds = [s for s in matrix["seeds"] if all(s in values.get(x, {}) for x in STRATEGIES)]
    if not seeds:
        print(f"{path.stem}: no seed has finished every cell in {store}; left out",
              file=sys.stderr)
        continue

    def per_seed(strategy: str, key: str = "final_seen") -> list[float]:
        return [values[strategy][s]["summary"][key] for s in seeds]  # noqa: B023

    final = {s: per_seed(s) for s in STRATEGIES}
    margin = [j - p for j, p in zip(final["joint"], final["pretrained"], strict=True)]
    rows.append({"setting": path.stem, **describe(matrix), "seeds": len(seeds),
                 **{f"final_seen_{s}": f"{sum(v) / len(v):.4f}" for s, v in final.items()},
                 "joint_minus_pretrained": f"{sum(margin) / len(margin):.4f}",
                 "joint_minus_pretrained_ci": interval(margin),
                 "finetune_forgetting": interval(per_seed("finetune", "forgetting")),
                 "finetune_s": f"{values['finetune'][seeds[0]]['timings']['total_s']:.0f}",
                 "joint_s": f"{values['joint'][seeds[0]]['timings']['total_s']:.0f}"})
with open(HERE / "screen.csv", "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
head = ["setting", "stream", "px", "pool", "steps", "lr", "trunk x", "seeds", "pretrained",
        "first_session", "finetune", "joint", "joint − pretrained", "finetune forgetting",
        "finetune s", "joint s"]
lines = ["| " + " | ".join(head) + " |", "|---|---|---:|---|---:|---:|---:|---:|" + "---:|" * 8]
for r in rows:
    lines.append("| " + " | ".join([
        r["setting"], r["stream"], r["image_size"], r["pool"], r["steps"], r["lr"],
        r["trunk_lr_mult"], str(r["seeds"]),
        *(f"{float(r[f'final_seen_{s}']):.3f}" for s in STRATEGIES),
        r["joint_minus_pretrained_ci"], r["finetune_forgetting"].lstrip("+"),
        r["finetune_s"], r["joint_s"]]) + " |")
(HERE / "screen.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
