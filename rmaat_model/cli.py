"""``rmaat train`` and ``rmaat evaluate`` (click commands; see rmaat_app/cli.py).

    rmaat train --task listops --model rmaat --data DIR --out DIR [--set key=value ...]
                [--config FILE] [--show-defaults]
    rmaat evaluate RUN_DIR [--split test] [--weights best|last] [--data DIR]

Configuration precedence, the same for every verb (``astro_rmaat.config.PRECEDENCE``):
``--task/--model/--data/--method/--steps`` > ``--set`` (dotted keys, e.g. ``--set
optim.lr=3e-4 --set model.n_layers=2``) > ``--config`` JSON > TrainConfig defaults. Under ``torchrun`` the same command trains on every process:
``torchrun --nproc-per-node 2 -m rmaat_app train ...``.
"""

from __future__ import annotations

import json

import click

from astro_rmaat.config import flag_overrides, load_config, to_dict


def _build_config(config_file, task, model, data, method, steps, sets):
    from rmaat_model.train_config import TrainConfig
    flags = flag_overrides({"task": task, "model.arch": model, "data_dir": data,
                            "method": method, "steps": steps})
    return load_config(TrainConfig, config_file, [*sets, *flags])


@click.command(name="train", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--task", help="recall | assoc | listops | text | retrieval | image | pathfinder")
@click.option("--model", "model", help="rmaat | rmt | rlt | elastic | transformer | at")
@click.option("--data", "data", type=click.Path(file_okay=False), help="directory of the task's files")
@click.option("--out", "out", type=click.Path(file_okay=False), help="run directory to create or resume")
@click.option("--method", type=click.Choice(["amrb", "bptt", "tbptt"]), help="gradient through segments")
@click.option("--steps", type=int, help="optimiser steps")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="TrainConfig JSON file")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="override one config value (repeatable)")
@click.option("--show-defaults", is_flag=True, help="print the resulting config as JSON and exit")
@click.option("--quiet", is_flag=True, help="no progress bar")
def train_command(task, model, data, out, method, steps, config_file, sets, show_defaults, quiet):
    """Train RMAAT or a baseline on an LRA task (or the synthetic 'recall' task)."""
    cfg = _build_config(config_file, task, model, data, method, steps, sets)
    if show_defaults:
        click.echo(json.dumps(to_dict(cfg), indent=2, sort_keys=True))
        return
    if not out:
        raise click.UsageError("--out DIR is required (the run directory to create or resume)")
    from rmaat_model.train import RESULTS_FILE, train
    run = train(cfg, out, progress=not quiet)
    results = run / RESULTS_FILE
    if results.is_file():
        res = json.loads(results.read_text())
        click.echo(f"{run}: best step {res['best_step']}, val acc {res['val_acc']:.4f}, "
                   f"test acc {res['test_acc']:.4f} (majority {res['majority']['test_acc']:.4f})")


@click.command(name="evaluate", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--split", default="test", show_default=True, type=click.Choice(["train", "val", "test"]))
@click.option("--weights", default="best", show_default=True, type=click.Choice(["best", "last"]))
@click.option("--data", "data", type=click.Path(file_okay=False), help="data directory (if it moved)")
@click.option("--batch-size", type=int, help="evaluation batch size")
def evaluate_command(run_dir, split, weights, data, batch_size):
    """Re-evaluate a training run's weights on one split; prints JSON."""
    from rmaat_model.evaluate import evaluate
    res = evaluate(run_dir, split, weights=weights, data_dir=data, batch_size=batch_size)
    click.echo(json.dumps(res, indent=2, sort_keys=True))
