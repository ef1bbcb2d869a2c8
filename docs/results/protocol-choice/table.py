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

HERE = Path(__file__).resolve().parent
ROOT = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parents[2] / "results" / "protocol-choice"
STRATEGIES = ("pretrained", "first_session", "finetune", "joint")


def describe(matrix: dict) -> dict[str, str]:
    sc, tr = matrix["scenarios"][0], matrix["training"]
    return {"stream": sc["protocol"], "image_size": str(sc.get("image_size", "")),
            "pool": matrix["model"]["pool"], "steps": str(tr["iterations"]),
            "lr": f"{tr['lr']:g}", "trunk_lr_mult": f"{tr.get('trunk_lr_mult', 1.0):g}"}


rows = []
for path in sorted(HERE.glob("*.yaml")):
    matrix = yaml.safe_load(path.read_text())
    store = ROOT / path.stem
    values: dict[str, dict] = {}
    for cell in sorted((store / "cells").glob("*/result.json")):
        result = json.loads(cell.read_text())
        if result.get("status") == "finished":
            values[result["config"]["strategy"]] = result["payload"]
    if not all(s in values for s in STRATEGIES):
        print(f"{path.stem}: not every cell has finished in {store}; left out", file=sys.stderr)
        continue
    final = {s: values[s]["summary"]["final_seen"] for s in STRATEGIES}
    rows.append({"setting": path.stem, **describe(matrix),
                 **{f"final_seen_{s}": f"{v:.4f}" for s, v in final.items()},
                 "joint_minus_pretrained": f"{final['joint'] - final['pretrained']:.4f}",
                 "finetune_forgetting": f"{values['finetune']['summary']['forgetting']:.4f}",
                 "finetune_s": f"{values['finetune']['timings']['total_s']:.0f}",
                 "joint_s": f"{values['joint']['timings']['total_s']:.0f}"})
with open(HERE / "screen.csv", "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
head = ["setting", "stream", "px", "pool", "steps", "lr", "trunk x", "pretrained",
        "first_session", "finetune", "joint", "joint − pretrained", "finetune forgetting",
        "finetune s", "joint s"]
lines = ["| " + " | ".join(head) + " |", "|---|---|---:|---|---:|---:|---:|" + "---:|" * 8]
for r in rows:
    lines.append("| " + " | ".join([
        r["setting"], r["stream"], r["image_size"], r["pool"], r["steps"], r["lr"],
        r["trunk_lr_mult"], *(f"{float(r[f'final_seen_{s}']):.3f}" for s in STRATEGIES),
        f"{float(r['joint_minus_pretrained']):+.3f}",
        f"{float(r['finetune_forgetting']):.3f}", r["finetune_s"],
        r["joint_s"]]) + " |")
(HERE / "screen.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
