"""``rmaat sweep``: run a grid of simulations serially, on local processes, or on Dask."""

from __future__ import annotations

import click


@click.command(name="sweep", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="sweep config JSON ({base, grid, seed, standalone}); a plain simulation "
                   "config is taken as the base")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="sweep directory (design.parquet, points/<id>/...); rerun to resume")
@click.option("--grid", "grid_items", multiple=True, metavar="KEY=V1,V2,...",
              help="a grid axis over a dotted config key, e.g. params.alpha=0,0.9 (repeatable)")
@click.option("--executor", type=click.Choice(["serial", "processes", "dask"]), default="serial",
              show_default=True, help="where points run")
@click.option("--workers", type=int, default=2, show_default=True,
              help="worker processes (processes, or a local Dask cluster)")
@click.option("--scheduler", default=None, metavar="tcp://HOST:PORT",
              help="address of a running Dask scheduler (implies --executor dask)")
@click.option("--standalone", is_flag=True, default=False,
              help="cpp_standalone: build once, rerun the binary with run_args per point")
@click.option("--timeout", "timeout_s", type=float, default=10.0, show_default=True,
              help="seconds to wait for the Dask scheduler")
@click.option("--quiet", is_flag=True, help="no progress bar")
@click.option("--show-defaults", is_flag=True,
              help="print the sweep config (base + grid) as JSON and exit")
def sweep_command(config_path, out_dir, grid_items, executor, workers, scheduler, standalone,
                  timeout_s, quiet, show_defaults):
    """Run every point of a parameter grid; each point is a normal simulate run directory."""
    from astro_sim.sweep import load_sweep_config, sweep

    cfg = load_sweep_config(config_path, grid_items, standalone=standalone or None)
    if show_defaults:
        from astro_rmaat.config import to_dict
        from astro_rmaat.runs import to_json
        click.echo(to_json(to_dict(cfg)), nl=False)
        return
    if out_dir is None:
        raise click.UsageError("--out DIR is required (or use --show-defaults)")
    if scheduler:
        executor = "dask"
    out = sweep(cfg, out_dir, executor=executor, workers=workers, scheduler=scheduler,
                progress=not quiet, connect_timeout_s=timeout_s)
    click.echo(str(out))
