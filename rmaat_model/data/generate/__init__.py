"""The generators of the locally generated LRA tasks (``rmaat generate listops|pathfinder``).

They write the official file layouts with NumPy and PIL only: nothing here imports torch
(tests/rmaat_model/data/test_data_cli.py checks it). The torch Datasets that read the files
are rmaat_model.data.listops and rmaat_model.data.pathfinder.
"""

from __future__ import annotations


def worker_pool(workers: int):
    """A ``multiprocessing.Pool`` of ``workers`` processes for the generators: forked where
    fork is available (no re-import of torch), each ending with this process
    (``astro_rmaat.workers.exit_with_parent``)."""
    import multiprocessing as mp
    import os

    from astro_rmaat.workers import exit_with_parent
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    return ctx.Pool(workers, initializer=exit_with_parent, initargs=(os.getpid(),))
