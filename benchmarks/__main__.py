"""``python -m benchmarks``: the lrbench command line."""

from benchmarks.cli import run

run()
