"""``rmaat simulate``: run one simulation config into a run directory."""

from __future__ import annotations

import json

import click

from astro_rmaat import config as cfgmod
from astro_rmaat.runs import to_json
from astro_sim.simulate import DEFAULT_FAMILY, MODEL_FAMILIES, load_sim_config, simulate


@click.command(name="simulate", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="JSON config file (its 'model' key picks the family); defaults otherwise.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Run directory to create (refused if it holds a finished run).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override one config value, dotted keys, e.g. --set protocol.n_cycles=20.")
@click.option("--model", type=click.Choice(list(MODEL_FAMILIES)), default=None,
              help=f"Model family (default: the config's 'model', else {DEFAULT_FAMILY}).")
@click.option("--show-defaults", is_flag=True,
              help="Print the full config (defaults + --config + --set) as JSON and exit.")
def simulate_command(config_path, out_dir, overrides, model, show_defaults):
    """Simulate a neuron–astrocyte model with Brian2 and write traces.parquet."""
    cfg = load_sim_config(config_path, overrides, model=model)
    if show_defaults:
        click.echo(to_json(cfgmod.to_dict(cfg)), nl=False)
        return
    if out_dir is None:
        raise click.UsageError("--out DIR is required (or use --show-defaults)")
    out = simulate(cfg, out_dir, progress=True)
    meta = json.loads((out / "meta.json").read_text())
    click.echo(f"wrote {out} ({cfg.model}, target {meta.get('brian2_target')}, "
               f"{meta['wall_time_s']:.2f} s)")
