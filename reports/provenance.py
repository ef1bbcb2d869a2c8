"""Where a report's numbers came from: the lrbench commits and the CPUs that computed its
cells, and the lines of the report page that warn when a table mixes them.

A commit changes code; another kind of CPU changes rounding: PyTorch, oneDNN and MKL pick
their vector code by the processor, and the same cell and seed trained on two such
machines ended a few thousandths of Recall@1 apart (measured on the CUB subset:
``docs/run.md``, "The same numbers need the same kind of CPU"). Byte-identical values are
a property of one code version on one kind of CPU.
"""

from __future__ import annotations

from typing import Any

from benchmarks.run.store import UNRECORDED


def provenance_lines(results: Any) -> list[str]:
    """The report page's paragraphs on the commits and CPUs behind its cells: a warning
    for each kind of mix, else the one commit and CPU."""
    out = []
    commits = sorted(set(results.commits.values()))
    if len(commits) > 1:
        out.append(f"**Warning: these tables mix cells computed by {len(commits)} lrbench "
                   f"commits** ({', '.join(c[:10] for c in commits)}); rerun the older ones "
                   "(`lrbench run ... --rerun-before COMMIT`) for numbers from one code "
                   "version.")
    elif commits:
        out.append(f"Every cell was computed by lrbench commit `{commits[0][:10]}`.")
    kinds = sorted(set(results.machines.values()) - {UNRECORDED})
    bare = sum(v == UNRECORDED for v in results.machines.values())
    if len(kinds) > 1:
        out.append(f"**Warning: these tables mix cells computed on {len(kinds)} kinds of "
                   f"CPU** ({'; '.join(kinds)}): training rounds differently on another "
                   "instruction set, and the same cell can end a few thousandths of Recall@1 "
                   "apart (`docs/run.md`); compare cells of one kind.")
    elif kinds:
        out.append(f"The cells that record their CPU ran on {kinds[0]}.")
    if bare:
        out.append(f"{bare} cell(s) record no CPU (written before lrbench recorded it).")
    return out
