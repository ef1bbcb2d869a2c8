"""``lrbench check``: the contract kit on one strategy, without pytest."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from benchmarks.errors import LrbenchError


def add_parser(sub: Any) -> None:
    """``lrbench check``'s arguments, added to the subcommands ``sub``."""
    p = sub.add_parser("check", help="run the contract kit on a strategy (no pytest needed)",
                       description="Train the strategy on a tiny synth-fg stream (3 "
                       "experiences, small CNN, seconds on a CPU) and check finite losses, an "
                       "active regulariser, a full R matrix, determinism under a seed and "
                       "identical numbers after checkpoint + resume (benchmarks.contract). "
                       "Exit code 0 when every check passes, 1 when one fails (the reason in "
                       "one line), 2 for an unknown strategy or a bad hyperparameter.")
    p.add_argument("strategy", help="a registered strategy (see 'lrbench list strategies')")
    p.add_argument("--hparam", action="append", default=[], metavar="KEY=VALUE",
                   help="a hyperparameter of the strategy (repeatable); VALUE is read as "
                   "JSON when it parses, e.g. --hparam lam=2.5 --hparam n_synth=16")
    p.add_argument("--trunk", default="small_cnn",
                   help="the model's trunk, as model.trunk in a matrix (e.g. timm:resnet18, "
                   "randomly initialised); default small_cnn")
    p.add_argument("--device", default="cpu",
                   help="where the kit trains, as training.device (cpu, cuda, cuda:N, mps); "
                   "default cpu")



def command(args: argparse.Namespace) -> int:
    """``lrbench check``: the contract kit, each check printed as it passes."""
    from benchmarks.contract import check_strategy
    from strategies import make_config

    hparams: dict[str, Any] = {}
    for item in args.hparam:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise LrbenchError(f"--hparam {item!r}: give KEY=VALUE, e.g. --hparam lam=2.5")
        try:
            hparams[key.strip()] = json.loads(value)
        except ValueError:
            hparams[key.strip()] = value  # a plain string, e.g. mode=online
    name = args.strategy
    make_config(name, hparams)  # an unknown name or a bad value: one line, exit 2, first
    from benchmarks.config import check_trunk

    check_trunk(args.trunk, "--trunk")  # unknown (or timm missing): one line, exit 2
    if args.device != "cpu":  # an unknown device, or one this host lacks: one line, exit 2
        from benchmarks.config import _device
        from benchmarks.contract import tiny_cell
        from benchmarks.run.preflight import check_devices

        try:
            _device(args.device)
        except ValueError as exc:
            raise LrbenchError(f"--device: {exc}") from None
        check_devices([tiny_cell(name, hparams, device=args.device)])
    model = "small CNN" if args.trunk == "small_cnn" else args.trunk
    print(f"{name}: contract kit (3 synth-fg experiences, {model})", flush=True)
    done: list[str] = []

    def passed(check: str) -> None:
        done.append(check)
        print(f"  ok    {check}", flush=True)

    from benchmarks.run.cell import failure_reason, interrupted, note_signals

    try:
        with note_signals():
            check_strategy(name, hparams, on_check=passed, trunk=args.trunk,
                           device=args.device)
    except LrbenchError:  # unknown strategy, bad hyperparameter: exit 2
        raise
    except BaseException as exc:  # a failed check, or the plugin raised (or exited) in a
        # cell: SystemExit, KeyboardInterrupt without a signal included
        if isinstance(exc, KeyboardInterrupt) and interrupted():
            raise
        reason = str(exc) if isinstance(exc, AssertionError) else failure_reason(exc)
        tb = exc.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        where = "" if isinstance(exc, AssertionError) or tb is None else \
            f" (raised at {tb.tb_frame.f_code.co_filename}:{tb.tb_lineno})"
        print(f"  FAIL  {' '.join((reason + where).split())}")
        print(f"{name}: failed after {len(done)} passing check(s)")
        if not isinstance(exc, Exception):  # said on stderr too: it is easy to miss
            print(f"lrbench: {name}: a contract-kit cell failed: {failure_reason(exc)}",
                  file=sys.stderr)
        return 1
    print(f"{name}: all {len(done)} checks passed")
    return 0
