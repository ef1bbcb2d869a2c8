"""The ``lrbench`` command line (also ``python -m benchmarks``).

Every user error ends as one line on stderr and exit code 2, never a traceback; results go
to stdout, as JSON with ``--json`` for scripts and checks.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from benchmarks.commands import check, data, listing, report, stream, tune
from benchmarks.commands import run as run_command
from benchmarks.commands.common import EXIT_USAGE, Parser, quiet_third_party
from benchmarks.commands.run import run_overrides as run_overrides  # re-exported
from benchmarks.errors import LrbenchError

#: each command's module: its ``add_parser(sub)`` and its handler ``command(args)``
COMMAND_MODULES = {"list": listing, "data": data, "run": run_command, "tune": tune,
                   "report": report, "stream": stream, "check": check}
COMMAND_ORDER = ("list", "data", "run", "tune", "report", "stream", "check")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (exposed for docs and tests)."""
    parser = Parser(prog="lrbench", description=(
        "Benchmark suite for continual (incremental and lifelong) fine-grained image "
        "retrieval: list what is registered, inspect data and streams, run a benchmark "
        "matrix, report on its results."))
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name in COMMAND_ORDER:  # help lists them in this order
        COMMAND_MODULES[name].add_parser(sub)
    return parser


COMMANDS = {name: module.command for name, module in COMMAND_MODULES.items()}


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled exactly as Ctrl-C: running cells (and their worker processes) are
    stopped, finished results are kept, the tidy table is rebuilt, the lock released."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lrbench`` console script; returns the exit code."""
    quiet_third_party()
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except LrbenchError as exc:  # strategies.StrategyError included
        print(f"lrbench: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Terminated:
        print("lrbench: terminated", file=sys.stderr)
        return 143
    except SystemExit as exc:  # raised inside a command (a plugin, a library it calls):
        # never a silent success
        print(f"lrbench: error: the command was ended by SystemExit({exc.code!r}) raised "
              "inside it (a strategy plugin, or a library it calls); what finished before "
              "is kept", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("lrbench: interrupted", file=sys.stderr)
        return 130


def run() -> NoReturn:
    """Console-script wrapper: exit with :func:`main`'s code.

    A reader that stops early (``lrbench list strategies | head``) closes the pipe: that
    ends the output quietly, as in any Unix tool, not with a traceback."""
    import signal

    signal.signal(signal.SIGTERM, _on_sigterm)  # a scheduler's kill stops cleanly, as Ctrl-C
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # Python flushes stdout again at exit: point it at devnull so that cannot fail
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    sys.exit(code)


if __name__ == "__main__":
    run()
