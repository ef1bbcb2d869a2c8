"""``lrbench list {datasets,protocols,strategies}``: what is registered."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(sub: Any) -> None:
    """``lrbench list``'s arguments, added to the subcommands ``sub``."""
    p = sub.add_parser("list", help="list registered datasets, protocols or strategies")
    p.add_argument("what", choices=["datasets", "protocols", "strategies"])
    p.add_argument("--json", action="store_true", help="machine-readable output")



def command(args: argparse.Namespace) -> int:
    """``lrbench list``: print the registered datasets, protocols or strategies."""
    if args.what == "datasets":
        from benchmarks.datasets import DATASETS, SUMMARIES

        rows = [{"name": n, "summary": SUMMARIES[n],
                 "layout": getattr(DATASETS[n], "layout", "") or "(generated)"}
                for n in DATASETS]
    elif args.what == "strategies":
        from strategies import available_strategies

        rows = [spec.describe() for spec in available_strategies().values()]
        if not args.json:
            for r in rows:
                hp = ", ".join(f"{h['name']}={h['default']!r}" for h in r["hyperparameters"])
                print(f"{r['name']:<10}  {r['summary']}")
                if hp:
                    print(f"{'':<10}  hyperparameters: {hp}")
                if r["tunable"]:
                    print(f"{'':<10}  tunable: " + ", ".join(
                        f"{k} {v}" for k, v in r["tunable"].items()))
            return 0
    else:
        from benchmarks.protocols import PROTOCOLS

        rows = [{"name": p.name, "kind": p.kind, "datasets": list(p.datasets),
                 "schedule": p.schedule, "image_size": p.image_size,
                 "summary": p.description} for p in PROTOCOLS.values()]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        width = max(len(r["name"]) for r in rows)
        for r in rows:
            print(f"{r['name']:<{width}}  {r['summary']}")
    return 0
