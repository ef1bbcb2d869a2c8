"""The protocol screen's table, generated from its stores (docs/results/protocol-choice.md).

For each setting (a matrix beside this file, run into results/protocol-choice/<setting>):
the untrained model, first-session adaptation, fine-tuning and joint training on the
validation split; the margin joint - pretrained on the final seen Recall@1 and fine-tuning's
forgetting, the two numbers a protocol must clear (mean and 95% Student-t interval over the
seeds where more than one ran). Writes, beside this file, screen-cells.csv (every cell's
values, from which everything else is computed), screen.csv and screen.md, and the table
of protocol-choice.md between its markers.

    python docs/results/protocol-choice/table.py [STORES_ROOT]   # reads the stores
    python docs/results/protocol-choice/table.py --from-cells    # screen-cells.csv only
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository's metrics
HERE = Path(__file__).resolve().parent
PAGE = HERE.parent / "protocol-choice.md"
CELLS = HERE / "screen-cells.csv"
STRATEGIES = ("pretrained", "first_session", "finetune", "joint")
CELL_FIELDS = ["setting", "strategy", "seed", "final_seen", "forgetting", "total_s",
               "config_hash"]
BEGIN = "<!-- screen table: written by protocol-choice/table.py -->"
END = "<!-- end of screen table -->"


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


def matrices() -> dict[str, dict]:
    """setting -> its matrix file's contents."""
    return {p.stem: yaml.safe_load(p.read_text()) for p in sorted(HERE.glob("*.yaml"))}


def read_stores(root: Path) -> list[dict[str, str]]:
    """Every finished cell of every setting's store, as screen-cells.csv rows."""
    rows = []
    for setting, matrix in matrices().items():
        for path in sorted((root / setting / "cells").glob("*/result.json")):
            result = json.loads(path.read_text())
            cfg = result["config"]
            if result.get("status") != "finished" or cfg["seed"] not in matrix["seeds"]:
                continue
            summary = result["payload"]["summary"]
            rows.append({"setting": setting, "strategy": cfg["strategy"],
                         "seed": str(cfg["seed"]), "final_seen": repr(summary["final_seen"]),
                         "forgetting": repr(summary["forgetting"]),
                         "total_s": f"{result['payload']['timings']['total_s']:.1f}",
                         "config_hash": result["config_hash"]})
    return rows


def summarise(cells: list[dict[str, str]]) -> list[dict[str, object]]:
    """One row per setting whose four strategies finished on at least one common seed."""
    rows = []
    for setting, matrix in matrices().items():
        values: dict[str, dict[int, dict[str, str]]] = {}
        for c in cells:
            if c["setting"] == setting:
                values.setdefault(c["strategy"], {})[int(c["seed"])] = c
        seeds = [s for s in matrix["seeds"] if all(s in values.get(x, {}) for x in STRATEGIES)]
        if not seeds:
            print(f"{setting}: no seed has finished every cell; left out", file=sys.stderr)
            continue

        def per_seed(strategy: str, key: str = "final_seen") -> list[float]:
            return [float(values[strategy][s][key]) for s in seeds]  # noqa: B023

        final = {s: per_seed(s) for s in STRATEGIES}
        margin = [j - p for j, p in zip(final["joint"], final["pretrained"], strict=True)]
        rows.append({"setting": setting, **describe(matrix), "seeds": len(seeds),
                     **{f"final_seen_{s}": f"{sum(v) / len(v):.4f}" for s, v in final.items()},
                     "joint_minus_pretrained": f"{sum(margin) / len(margin):.4f}",
                     "joint_minus_pretrained_ci": interval(margin),
                     "finetune_forgetting": interval(per_seed("finetune", "forgetting")),
                     "finetune_s": f"{float(values['finetune'][seeds[0]]['total_s']):.0f}",
                     "joint_s": f"{float(values['joint'][seeds[0]]['total_s']):.0f}"})
    return rows


def markdown(rows: list[dict[str, object]]) -> str:
    head = ["setting", "stream", "px", "pool", "steps", "lr", "trunk x", "seeds",
            "pretrained", "first_session", "finetune", "joint", "joint − pretrained",
            "finetune forgetting", "finetune s", "joint s"]
    lines = ["| " + " | ".join(head) + " |",
             "|---|---|---:|---|---:|---:|---:|---:|" + "---:|" * 8]
    for r in rows:
        lines.append("| " + " | ".join([
            str(r["setting"]), str(r["stream"]), str(r["image_size"]), str(r["pool"]),
            str(r["steps"]), str(r["lr"]), str(r["trunk_lr_mult"]), str(r["seeds"]),
            *(f"{float(r[f'final_seen_{s}']):.3f}" for s in STRATEGIES),
            str(r["joint_minus_pretrained_ci"]), str(r["finetune_forgetting"]).lstrip("+"),
            str(r["finetune_s"]), str(r["joint_s"])]) + " |")
    return "\n".join(lines) + "\n"


def page_with(page: str, table: str) -> str:
    """``page`` with the text between its screen-table markers replaced by ``table``."""
    start, end = page.index(BEGIN) + len(BEGIN), page.index(END)
    return page[:start] + "\n" + table + page[end:]


def read_cells() -> list[dict[str, str]]:
    with open(CELLS, newline="") as f:
        return list(csv.DictReader(f))


def main(argv: list[str]) -> None:
    if argv[:1] == ["--from-cells"]:
        cells = read_cells()
    else:
        root = Path(argv[0]) if argv else HERE.parents[2] / "results" / "protocol-choice"
        cells = read_stores(root)
        with open(CELLS, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=CELL_FIELDS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(cells)
    rows = summarise(cells)
    with open(HERE / "screen.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    table = markdown(rows)
    (HERE / "screen.md").write_text(table)
    PAGE.write_text(page_with(PAGE.read_text(), table))
    print(table, end="")


if __name__ == "__main__":
    main(sys.argv[1:])
