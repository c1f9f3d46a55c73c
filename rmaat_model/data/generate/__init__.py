"""The generators of the locally generated LRA tasks (``rmaat generate listops|pathfinder``).

They write the official file layouts with NumPy and PIL only: nothing here imports torch
(tests/rmaat_model/data/test_data_cli.py checks it). The torch Datasets that read the files
are rmaat_model.data.listops and rmaat_model.data.pathfinder.
"""

from __future__ import annotations


def pool_context():
    """Worker processes for the generators: fork where available (no re-import of torch)."""
    import multiprocessing as mp
    return mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
