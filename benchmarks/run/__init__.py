"""How a matrix runs, one concern per module: ``store`` (the results folder and the
``result.json`` format), ``preflight`` (checks before any training), ``cell`` (building and
running one cell), ``executors`` (where cells run), ``cache`` (decoded images and frozen-stem
features on disk, shared by cells). ``benchmarks.runner`` orchestrates them.

Nothing is imported here: ``reports`` reads stores through ``benchmarks.run.store`` alone.
"""
