"""``lrbench stream``: the experiences of a protocol or of a stream given by flags."""

from __future__ import annotations

import argparse
import json
from typing import Any

from benchmarks.commands.common import (
    root_arg,
)
from benchmarks.errors import LrbenchError


def add_parser(sub: Any) -> None:
    """``lrbench stream``'s arguments, added to the subcommands ``sub``."""
    p = sub.add_parser("stream", help="show the experiences of a stream", description=(
        "Give a PROTOCOL name, or --dataset/--schedule for a class-incremental stream, or "
        "--lifelong A,B,C for a cross-dataset one."))
    p.add_argument("protocol", nargs="?", help="a named protocol (see 'lrbench list protocols')")
    p.add_argument("--dataset", help="dataset of a class-incremental stream")
    p.add_argument("--schedule", help="class counts per experience, e.g. 50+5x10 or 100+100")
    p.add_argument("--order", default="sorted",
                   help="class order: 'sorted' (by class id) or an integer seed")
    p.add_argument("--lifelong", help="comma-separated datasets, one experience each")
    root_arg(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")



def command(args: argparse.Namespace) -> int:
    """``lrbench stream``: print the experiences of a stream."""
    from benchmarks.protocols import get_protocol
    from benchmarks.streams import class_incremental, lifelong

    given = [x for x in (args.protocol, args.dataset, args.lifelong) if x]
    if len(given) != 1:
        raise LrbenchError("give exactly one of PROTOCOL, --dataset (with --schedule) or "
                           "--lifelong A,B,C")
    if args.protocol:
        bench = get_protocol(args.protocol).build(args.root)
    elif args.dataset:
        if not args.schedule:
            raise LrbenchError("--dataset needs --schedule, e.g. --schedule 50+5x10")
        order: Any = int(args.order) if args.order.lstrip("-").isdigit() else args.order
        bench = class_incremental(args.dataset, args.schedule, root=args.root, order=order)
    else:
        names = [n.strip() for n in args.lifelong.split(",") if n.strip()]
        bench = lifelong(names, root=args.root)
    info = bench.stream_info
    if args.json:
        out = info.to_dict()
        for e in out["experiences"]:
            for key in ("class_names", "train_per_class", "test_per_class"):
                e.pop(key)
            labels = e.pop("labels")
            e["label_range"] = [min(labels), max(labels)]
        out["train_images"] = sum(e.train_images for e in info.experiences)
        out["test_images"] = sum(e.test_images for e in info.experiences)
        print(json.dumps(out, indent=2))
    else:
        print(f"{info.kind} stream, {len(info.experiences)} experiences")
        print(f"{'exp':>3}  {'dataset':<14} {'classes':>7} {'train':>7} {'test':>7}  labels")
        for e in info.experiences:
            print(f"{e.index:>3}  {e.dataset:<14} {e.num_classes:>7} {e.train_images:>7} "
                  f"{e.test_images:>7}  {min(e.labels)}..{max(e.labels)}")
    return 0
