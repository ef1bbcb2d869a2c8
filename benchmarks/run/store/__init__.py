"""The results store: its folder layout and the ``result.json`` format, read and written.

Every file of a store is read and written in this package, and only here (DESIGN.md,
"Results store"; ``reports`` reads stores through :func:`read_result` and
:func:`current_cells`): its layout and matrix files (:mod:`.layout`), its lock
(:mod:`.lock`), the ``result.json`` format (:mod:`.result`) and the tidy table
(:mod:`.tidy`)::

    results/<name>/
      matrix.yaml                       the resolved matrix
      cells.json                        the current matrix's cells: id -> config hash
      skipped.json                      broken images left out (only with --skip-corrupt)
      results.csv, results.parquet      tidy long table of every finished cell
      cells/<scenario>__<strategy>__seed<k>/
        result.json                     config, status, R matrices, timings, versions, host
        log.txt                         the cell's log (a failure's traceback too)
        checkpoint.pt                   only with --checkpoints
      first/<key>.pt                    a first experience shared by cells that differ only
                                        in hyperparameters inactive there (during a run)
      submitit/                         submitit's job pickles and logs (--executor submitit)

Every file is written through :func:`atomic_write` (a temporary file in the same folder,
flushed to disk, then renamed over the target), so an interrupted run never leaves half a
file, and the next run removes the temporary files it left (:func:`clean_temporary`); a
rerun skips cells whose ``result.json`` is finished with the same config hash
(:func:`finished`). :func:`read_result` checks what it reads: a damaged file is a
one-line :class:`DamagedResult` naming it and the command that recomputes it. Cells that
are not cells of the current matrix (:func:`stale_cells`, :func:`current_cells`; left by
``--resume`` with a changed matrix) stay on disk, out of every table.
:func:`store_lock` holds the store for one runner:

* an operating-system lock (``filelock``) on ``<store>/.lock`` excludes every other process
  of this host at once, even under a race, and is released by the kernel if the holder
  dies (``kill -9``): a stale lock cannot exist on one host;
* the holder is recorded in ``<store>/.lock.owner`` (``pid host``, written atomically
  while the OS lock is held, so nobody reads it half-written). The record is verified
  against the OS lock, never trusted: a runner that holds the OS lock knows that no other
  runner of this host holds the store, so a record naming this host (a killed run's, a
  reused pid, a damaged record) is stale and replaced. On a shared disk whose file locks
  do not reach across hosts, the record still keeps a runner of another host out: a
  holder on another host is never taken for stale, since its pid cannot be checked from
  here; the message names the host and the file to delete if that run is dead;
* release removes the owner record only when it is this process's own.

Every file of a store is opened only once it is known to be a regular file of bounded
size (``metrics.io.read_regular``): a folder, a FIFO or a symbolic link to ``/dev/zero`` in
place of one is a one-line error naming it (:func:`check_layout`, before any training), or
for a ``result.json`` a damaged result, set aside and recomputed.

The process that holds the lock is the only writer of the store: cells' results come back
to it from wherever they ran. Nothing here imports torch, Avalanche or the strategies.
"""

from benchmarks.run.store.layout import (
    CELL_FILES,
    MAX_STORE_FILE,
    STORE_FILES,
    STORE_FOLDERS,
    cell_dir,
    check_layout,
    check_lock_files,
    check_out_folder,
    check_store,
    config_cell_ids,
    current_cells,
    first_experience_path,
    matrix_cell_ids,
    matrix_difference,
    parse_yaml,
    prepare_store,
    read_matrix,
    read_skipped,
    read_store_text,
    read_yaml,
    remove_first_experiences,
    result_path,
    same_matrix,
    shared_training_dir,
    write_matrix,
    write_skipped,
)
from benchmarks.run.store.lock import (
    hostname,
    lock_free,
    store_lock,
)
from benchmarks.run.store.result import (
    UNRECORDED,
    DamagedResult,
    finished,
    finished_result,
    machine_label,
    older_than,
    read_result,
    replaced_result,
    result_problem,
    set_aside,
    write_result,
)
from benchmarks.run.store.tidy import (
    TIDY_COLUMNS,
    clean_temporary,
    stale_cells,
    stale_lines,
    tidy_rows,
    write_tidy,
)
from metrics.io import atomic_write  # re-exported: the store's writer

__all__ = [
    "UNRECORDED",
    "CELL_FILES",
    "DamagedResult",
    "MAX_STORE_FILE",
    "STORE_FILES",
    "STORE_FOLDERS",
    "TIDY_COLUMNS",
    "atomic_write",
    "cell_dir",
    "check_layout",
    "check_lock_files",
    "check_out_folder",
    "check_store",
    "finished_result",
    "machine_label",
    "clean_temporary",
    "config_cell_ids",
    "current_cells",
    "finished",
    "first_experience_path",
    "hostname",
    "lock_free",
    "matrix_cell_ids",
    "matrix_difference",
    "older_than",
    "parse_yaml",
    "prepare_store",
    "read_matrix",
    "read_result",
    "read_skipped",
    "read_store_text",
    "read_yaml",
    "remove_first_experiences",
    "shared_training_dir",
    "replaced_result",
    "result_path",
    "result_problem",
    "same_matrix",
    "set_aside",
    "stale_cells",
    "stale_lines",
    "store_lock",
    "tidy_rows",
    "write_matrix",
    "write_result",
    "write_skipped",
    "write_tidy",
]
