"""``rmaat generate listops|pathfinder``: write the locally generated LRA tasks.

Both write the official layout into ``--out`` (a run directory with ``config.json`` and
``meta.json``; a finished generation is never overwritten) and are deterministic for a
``--seed`` whatever ``--workers``.
"""

from __future__ import annotations

import click


@click.group(name="generate")
def generate_command() -> None:
    """Generate ListOps or Pathfinder in the official LRA layout."""


@generate_command.command(name="listops")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="directory for basic_{train,val,test}.tsv")
@click.option("--n-train", default=96_000, show_default=True, type=int, help="training samples")
@click.option("--n-val", default=2_000, show_default=True, type=int, help="validation samples")
@click.option("--n-test", default=2_000, show_default=True, type=int, help="test samples")
@click.option("--seed", default=0, show_default=True, type=int, help="random seed")
@click.option("--workers", default=2, show_default=True, type=int, help="processes")
def listops_command(out_dir: str, n_train: int, n_val: int, n_test: int, seed: int,
                    workers: int) -> None:
    """ListOps with the official settings (depth 10, 2-10 arguments, length 500-2000)."""
    from rmaat_model.data.generate.listops import generate_files
    paths = generate_files(out_dir, n_train=n_train, n_val=n_val, n_test=n_test, seed=seed,
                           workers=workers, progress=True)
    for split, path in paths.items():
        click.echo(f"{split}: {path}")


@generate_command.command(name="pathfinder")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="directory that receives pathfinder<R>/curv_contour_length_14/")
@click.option("--resolution", default=32, show_default=True, type=click.Choice(["32", "64", "128"]),
              help="image side in px (128 = Path-X)")
@click.option("--n", "n", default=200_000, show_default=True, type=int, help="images")
@click.option("--seed", default=0, show_default=True, type=int, help="random seed")
@click.option("--workers", default=2, show_default=True, type=int, help="processes")
def pathfinder_command(out_dir: str, resolution: str, n: int, seed: int, workers: int) -> None:
    """Pathfinder images (the "hard" set, contour length 14) with the LRA settings."""
    from rmaat_model.data.generate.pathfinder import generate_files
    root = generate_files(out_dir, resolution=int(resolution), n=n, seed=seed, workers=workers,
                          progress=True)
    click.echo(str(root))
