"""``lrbench data {info,check}``: a dataset on disk, counted or decoded."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import Counter
from typing import Any

from benchmarks.commands.common import (
    Parser,
    root_arg,
)
from benchmarks.errors import LrbenchError, abridged


def add_parser(sub: Any) -> None:
    """``lrbench data``'s arguments, added to the subcommands ``sub``."""
    p = sub.add_parser("data", help="inspect and check a dataset on disk")
    dsub = p.add_subparsers(dest="data_command", required=True, parser_class=Parser)
    for name, helptext in (
        ("info", "classes, images and per-split counts (no image is decoded)"),
        ("check", "decode every image and list broken files (exit 2 if any)"),
    ):
        q = dsub.add_parser(name, help=helptext)
        q.add_argument("dataset", help="dataset name, e.g. cub200 or synth-fg:glyphs")
        root_arg(q)
        q.add_argument("--json", action="store_true", help="machine-readable output")
        if name == "info":
            q.add_argument("--download", action="store_true",
                           help="fetch the official files first where possible (checksummed)")



def _dataset_info(name: str, root: Any, download: bool) -> dict[str, Any]:
    from benchmarks.datasets import get_dataset
    from benchmarks.streams import jsonable

    ds = get_dataset(name, root, "all", download=download)
    per_class = Counter(ds.targets)
    counts = [per_class.get(i, 0) for i in range(ds.num_classes)]
    return {
        "dataset": ds.name, "root": None if ds.root is None else str(ds.root),
        "classes": ds.num_classes, "images": len(ds), "splits": dict(ds.split_counts),
        "images_per_class": {"min": min(counts), "median": statistics.median(counts),
                             "max": max(counts)},
        "class_ids": {"first": jsonable(ds.class_ids[0]), "last": jsonable(ds.class_ids[-1])},
    }


def command(args: argparse.Namespace) -> int:
    """``lrbench data info|check``: a dataset's counts, or every image decoded."""
    if args.data_command == "info":
        info = _dataset_info(args.dataset, args.root, args.download)
        if args.json:
            print(json.dumps(info, indent=2))
        else:
            splits = ", ".join(f"{k} {v:,}" for k, v in info["splits"].items())
            ipc = info["images_per_class"]
            print(f"{info['dataset']} at {info['root']}: {info['classes']} classes, "
                  f"{info['images']:,} images ({splits}); images per class "
                  f"{ipc['min']}..{ipc['max']} (median {ipc['median']})")
        return 0
    from benchmarks.datasets import check_images, get_dataset

    ds = get_dataset(args.dataset, args.root, "all")
    if ds.name == "synth-fg":
        bad: list[tuple[str, str]] = []
    else:
        bad = check_images(ds, progress=sys.stderr.isatty())
    if args.json:
        print(json.dumps({"dataset": ds.name, "checked": len(ds),
                          "broken": [{"path": p, "reason": r} for p, r in bad]}, indent=2))
    if bad:
        shown = abridged([p for p, _ in bad], 5, "; ")
        raise LrbenchError(f"{len(bad)} of {len(ds)} images of {ds.name} cannot be decoded: "
                           f"{shown}. Replace or remove these files, or let 'lrbench run "
                           "--skip-corrupt' leave them out")
    if not args.json:
        print(f"{ds.name}: all {len(ds):,} images decode")
    return 0
