"""``rmaat pipeline``: simulate -> fit -> retention.json -> train RMAAT and a baseline -> report.

The project's main job and the first thing a new user runs (``make demo``). Each stage
is called through its public entry function and writes its own run directory; the stages
meet only at files::

    OUT/sim/                 astro_sim.simulate      traces.parquet, samples.parquet
    OUT/fit/                 distill.fit             fit.json, retention.json, fit.png
    OUT/data/<task>/         rmaat_model.data        official LRA layout (generated tasks)
    OUT/train/<model>/       rmaat_model.train       model.safetensors, ckpt.pt, metrics.csv
    OUT/report.md, OUT/figures/*.png, OUT/results.json, OUT/config.json, OUT/meta.json

Rerunning on the same OUT resumes: a stage whose directory holds a finished run is
reused, an interrupted one is resumed (training from its checkpoint). A different config
or a finished pipeline is refused; nothing is half-overwritten.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from astro_rmaat import config as cfgmod
from astro_rmaat import runs
from astro_rmaat.errors import ConfigError


#: PipelineConfig fields that size the generated ListOps data (task listops only)
LISTOPS_FIELDS = ("n_train", "n_eval", "min_len", "max_len")


@dataclass(frozen=True)
class PipelineConfig:
    family: Literal["rmaat_network", "tripartite"] = "rmaat_network"  # biophysical model family to distil
    sim_set: tuple[str, ...] = ()              # KEY=VALUE overrides of the simulation config (see rmaat simulate --show-defaults)
    fit_models: tuple[str, ...] = ()           # candidate macro models (empty: all)
    task: str = "recall"                       # training task: recall (synthetic, 2..16 segments) or listops (generated here)
    models: tuple[str, ...] = ("rmaat", "rmaat-none", "at-segment")  # names of MODEL_VARIANTS; the first is
    #                                            the RMAAT model, the rest are compared with it at equal steps and sizes
    steps: int = 300                           # optimiser steps per model (quick: 40)
    budget_minutes: float | None = None        # optional wall-clock cap per model, minutes (None: steps decide)
    n_train: int = 4000                        # task listops only (recall makes its own data): generated
    #                                            training examples (official algorithm)
    n_eval: int = 500                          # task listops only: generated validation and test examples each
    min_len: int = 100                         # ListOps length bounds, tokens; the official range is 500 < len < 2000,
    max_len: int = 500                         # shortened by default so that minutes of CPU train more than a few steps
    seed: int = 0                              # one seed for every stage
    quick: bool = False                        # tiny sizes for tests and notebooks (seconds, not minutes)

    def __post_init__(self) -> None:
        cfgmod.require_seed("seed", self.seed)
        if self.budget_minutes is not None:
            cfgmod.require_positive("budget_minutes", self.budget_minutes, "min")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ConfigError(f"steps = {self.steps!r}: expected a positive integer")
        unknown = [m for m in self.models if m not in MODEL_VARIANTS]
        if unknown:
            raise ConfigError(f"models: unknown model {unknown[0]!r}; expected names from "
                              f"{', '.join(MODEL_VARIANTS)}")
        for name in ("n_train", "n_eval"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} = {getattr(self, name)!r}: expected a positive integer")
        if not self.models:
            raise ConfigError("models is empty: expected at least one model to train, e.g. rmaat")
        if not 0 < self.min_len < self.max_len:
            raise ConfigError(f"min_len = {self.min_len!r}, max_len = {self.max_len!r}: expected 0 < min_len < max_len")
        if self.task != "listops":   # the recall task makes its own data: these would do nothing
            defaults = {f.name: f.default for f in dataclasses.fields(PipelineConfig)}
            for name in LISTOPS_FIELDS:
                if getattr(self, name) != defaults[name]:
                    raise ConfigError(f"{name} = {getattr(self, name)!r}: {', '.join(LISTOPS_FIELDS)} size the "
                                      f"generated ListOps data; task {self.task!r} makes its own; expected "
                                      "them unset, or task listops")


#: model name -> ModelConfig fields; every name trains at the same sizes and steps
MODEL_VARIANTS: dict[str, dict] = {
    "rmaat": dict(arch="rmaat", retention="ltp"),              # distilled schedule, default reading
    "rmaat-literal": dict(arch="rmaat", retention="ltp", retention_reading="literal"),
    "rmaat-stream": dict(arch="rmaat", retention="stream"),
    "rmaat-learned": dict(arch="rmaat", retention="learned"),
    "rmaat-flat": dict(arch="rmaat", retention="flat"),        # RF = 1/T: capacity without LTP shape
    "rmaat-none": dict(arch="rmaat", retention="none"),        # memory passed on unscaled
    "rmt": dict(arch="rmt", retention="none"),
    "rlt": dict(arch="rlt", retention="none"),
    "elastic": dict(arch="elastic", retention="none"),
    "at": dict(arch="at", retention="none"),
    "at-segment": dict(arch="at", at_scope="segment", retention="none"),   # memory-free control
    "transformer": dict(arch="transformer", retention="none"),
}
#: recall layout of the pipeline: sequences of 2..16 segments of 16 tokens (the paper's
#: Retrieval uses 16 segments); quick: 2..4 segments
RECALL_SEGMENT_LEN = 16


# --------------------------------------------------------------------------- stage settings
#: generated or synthetic tasks the pipeline can make itself (others need official files)
LOCAL_TASKS = ("listops", "recall")


def _quick_or(cfg: PipelineConfig, quick, full):
    return quick if cfg.quick else full


def data_sizes(cfg: PipelineConfig) -> dict[str, int]:
    """Generated-data sizes; quick mode caps them (short ListOps trees, a few hundred samples)."""
    if not cfg.quick:
        return {"n_train": cfg.n_train, "n_eval": cfg.n_eval, "min_len": cfg.min_len, "max_len": cfg.max_len}
    return {"n_train": min(cfg.n_train, 256), "n_eval": min(cfg.n_eval, 64),
            "min_len": min(cfg.min_len, 40), "max_len": min(cfg.max_len, 250)}


def sim_config(cfg: PipelineConfig):
    from astro_sim.simulate import load_sim_config

    sets = list(cfg.sim_set)
    if cfg.quick and cfg.family == "rmaat_network":
        sets = ["record_interval_ms=50", *sets]
    return load_sim_config(None, sets, model=cfg.family)


def fit_config(cfg: PipelineConfig):
    from distill.fitting import FitConfig
    from distill.models import DEFAULT_CANDIDATES

    return FitConfig(models=tuple(cfg.fit_models) or DEFAULT_CANDIDATES, seed=cfg.seed,
                     n_starts=_quick_or(cfg, 4, 8), band_samples=_quick_or(cfg, 300, 2000))


def train_steps(cfg: PipelineConfig) -> int:
    """Optimiser steps of every model's training run (quick: at most 40)."""
    return _quick_or(cfg, min(cfg.steps, 40), cfg.steps)


def train_config(cfg: PipelineConfig, name: str, data_dir: Path, retention_file: Path):
    """The TrainConfig of model ``name`` (MODEL_VARIANTS) on the pipeline's task.

    recall: the learning test's sizes (d_model 32, 1 block, 4 memory tokens, segments of 16),
    lengths of 2..16 segments so the test split gives accuracy by age; listops: d_model 64,
    2 blocks, segments of 128, each batch in two shards on threads of their own
    (rmaat_model.shards; the same numbers on one core, in turn). Training runs a fixed number
    of steps (the same numbers on any machine load), evaluating 20 times."""
    from rmaat_model.model_config import MEMORY_ARCHS, ModelConfig
    from rmaat_model.train_config import OptimConfig, TrainConfig

    if name not in MODEL_VARIANTS:
        raise ConfigError(f"model {name!r}: expected one of {', '.join(MODEL_VARIANTS)}")
    variant = MODEL_VARIANTS[name]
    steps = train_steps(cfg)
    common = dict(retention_file=str(retention_file), **variant)
    if cfg.task == "recall":
        model = ModelConfig(d_model=32, n_heads=2, n_layers=1, d_ff=64, dropout=0.0,
                            segment_len=RECALL_SEGMENT_LEN, n_mem=4, **common)
        optim = OptimConfig(lr=5e-3, retention_lr=0.1, warmup_steps=min(20, steps // 2))
        task = dict(max_len=RECALL_SEGMENT_LEN * _quick_or(cfg, 4, 16), recall_min_segments=2,
                    batch_size=32, eval_batches=_quick_or(cfg, 1, 2), eval_batch_size=256)
    else:
        model = ModelConfig(d_model=_quick_or(cfg, 32, 64), n_heads=4, n_layers=2,
                            d_ff=_quick_or(cfg, 64, 128), dropout=0.1, segment_len=_quick_or(cfg, 32, 128),
                            n_mem=8, **common)
        optim = OptimConfig(lr=1e-3, warmup_steps=_quick_or(cfg, 2, 30))
        task = dict(max_len=data_sizes(cfg)["max_len"], data_dir=str(data_dir),
                    batch_size=_quick_or(cfg, 8, 32), eval_batches=_quick_or(cfg, 2, None), shards=2)
    return TrainConfig(task=cfg.task, model=model,
                       method="amrb" if variant["arch"] in MEMORY_ARCHS else "bptt", optim=optim,
                       steps=steps, eval_every=max(1, steps // 20), seed=cfg.seed,
                       max_minutes=cfg.budget_minutes, **task)


# --------------------------------------------------------------------------- stages
def _say(msg: str) -> None:
    print(msg, flush=True)


def _stage_simulate(cfg: PipelineConfig, out: Path) -> Path:
    from astro_sim.simulate import simulate

    if runs.is_finished(out):
        _say(f"  reusing the finished simulation in {out}")
        return out
    return simulate(sim_config(cfg), out)


def _stage_fit(cfg: PipelineConfig, sim_dir: Path, out: Path) -> Path:
    from distill.fitting import fit

    if runs.is_finished(out):
        _say(f"  reusing the finished fit in {out}")
        return out
    return fit(fit_config(cfg), sim_dir / "samples.parquet", out)


def _stage_data(cfg: PipelineConfig, out: Path) -> Path:
    if cfg.task == "recall":
        return out
    if cfg.task != "listops":
        raise ConfigError(f"task = {cfg.task!r}: the pipeline generates its own data; "
                          f"expected one of {', '.join(LOCAL_TASKS)} (train on official LRA files "
                          "with `rmaat train --task ... --data DIR`)")
    from rmaat_model.data.generate.listops import ListOpsSettings, generate_files

    if runs.is_finished(out):
        _say(f"  reusing the generated ListOps in {out}")
        return out
    sizes = data_sizes(cfg)
    settings = ListOpsSettings(min_length=sizes["min_len"], max_length=sizes["max_len"])
    generate_files(out, n_train=sizes["n_train"], n_val=sizes["n_eval"], n_test=sizes["n_eval"],
                   seed=cfg.seed,
                   settings=settings, workers=min(2, os.cpu_count() or 1), progress=True)
    return out


def _stage_train(cfg: PipelineConfig, arch: str, data_dir: Path, retention_file: Path,
                 out: Path) -> Path:
    from rmaat_model.train import train

    if runs.is_finished(out):
        _say(f"  reusing the finished training run in {out}")
        return out
    return train(train_config(cfg, arch, data_dir, retention_file), out, progress=True)


def check_stages(cfg: PipelineConfig, out: Path | None = None) -> None:
    """Build every stage's config (simulation, fit, one training run per model) before any
    stage runs: a bad model name or override stops the pipeline before it writes a file;
    with ``out``, ListOps sizes whose files would not fit there stop it too."""
    from astro_sim.simulate import validate

    validate(sim_config(cfg))
    fit_config(cfg)
    if cfg.task == "listops" and out is not None:
        from rmaat_model.data.generate.listops import ListOpsSettings, check_room

        sizes = data_sizes(cfg)
        check_room(out, sizes["n_train"], sizes["n_eval"], sizes["n_eval"],
                   ListOpsSettings(min_length=sizes["min_len"], max_length=sizes["max_len"]))
    for arch in cfg.models:
        try:
            train_config(cfg, arch, Path("data"), Path("retention.json"))
        except ConfigError as exc:
            raise ConfigError(f"models = {','.join(cfg.models)}: {exc}") from None


def pipeline(cfg: PipelineConfig, out_dir: str | os.PathLike) -> Path:
    """Run every stage into ``out_dir`` and write ``report.md``; returns the report path."""
    if not isinstance(cfg, PipelineConfig):
        raise ConfigError(f"pipeline() needs a PipelineConfig, got {type(cfg).__name__}")
    if cfg.task not in LOCAL_TASKS:
        raise ConfigError(f"task = {cfg.task!r}: expected one of {', '.join(LOCAL_TASKS)}")
    out = Path(out_dir)
    if runs.is_finished(out):
        from astro_rmaat.errors import RunExistsError
        raise RunExistsError(f"{str(out)!r} already holds a finished pipeline; its report is "
                             f"{str(out / 'report.md')!r} (choose a new --out to run again)")
    check_stages(cfg, out)
    runs.prepare_run_dir(out, cfgmod.to_dict(cfg))
    walls: dict[str, float] = {}
    n = 4 + len(cfg.models)
    with runs.Stopwatch() as total:
        _say(f"[1/{n}] simulate the {cfg.family} model (Brian2)")
        with runs.Stopwatch() as sw:
            sim_dir = _stage_simulate(cfg, out / "sim")
        walls["simulate"] = sw.elapsed
        _say(f"[2/{n}] fit the macro models and write retention.json (lmfit)")
        with runs.Stopwatch() as sw:
            fit_dir = _stage_fit(cfg, sim_dir, out / "fit")
        walls["fit"] = sw.elapsed
        _say(f"[3/{n}] prepare the {cfg.task} data")
        with runs.Stopwatch() as sw:
            data_dir = _stage_data(cfg, out / "data" / cfg.task)
        walls["data"] = sw.elapsed
        train_dirs = {}
        for i, arch in enumerate(cfg.models):
            budget = "" if cfg.budget_minutes is None else f", at most {cfg.budget_minutes:g} min"
            _say(f"[{4 + i}/{n}] train {arch} on {cfg.task} ({train_steps(cfg)} steps{budget})")
            with runs.Stopwatch() as sw:
                train_dirs[arch] = _stage_train(cfg, arch, data_dir, fit_dir / "retention.json",
                                                out / "train" / arch)
            walls[f"train_{arch}"] = sw.elapsed
        _say(f"[{n}/{n}] write the report")
        from rmaat_app.report import write_report
        report = write_report(out, cfg, sim_dir=sim_dir, fit_dir=fit_dir, train_dirs=train_dirs,
                              walls=walls, data_dir=data_dir)
    runs.finish_run(out, runs.make_meta(stage="pipeline", seed=cfg.seed, wall_time_s=total.elapsed,
                                        packages=("brian2", "lmfit", "torch"), stage_walls_s=walls))
    _say(f"report: {report}")
    return report


# --------------------------------------------------------------------------- CLI
def _pipeline_cli():
    import click

    @click.command(name="pipeline", context_settings={"help_option_names": ["-h", "--help"]})
    @click.option("--out", "out_dir", type=click.Path(file_okay=False), default="runs/pipeline",
                  show_default=True, help="Directory for every stage's outputs and the report.")
    @click.option("--family", type=click.Choice(["rmaat_network", "tripartite"]), default=None,
                  help="Biophysical model family to distil (default rmaat_network).")
    @click.option("--task", type=click.Choice(list(LOCAL_TASKS)), default=None,
                  help="Training task (default recall: synthetic, 2..16 segments; listops: generated locally).")
    @click.option("--budget", "budget_minutes", type=float, default=None,
                  help="Optional wall-clock cap on each model's training, minutes (default: none, steps decide).")
    @click.option("--models", default=None,
                  help="Comma-separated models to train (default rmaat,rmaat-none,at-segment); names: "
                  + ", ".join(MODEL_VARIANTS) + ".")
    @click.option("--quick", is_flag=True, help="Tiny sizes and 40 steps per model: under a minute once the Brian2 "
                  "cache is warm (tests, notebooks).")
    @click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
                  help="PipelineConfig JSON file.")
    @click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                  help="Override one PipelineConfig value, e.g. --set steps=600.")
    @click.option("--show-defaults", is_flag=True, help="Print the resulting config as JSON and exit.")
    def pipeline_command(out_dir, family, task, budget_minutes, models, quick, config_path,
                         overrides, show_defaults):
        """Simulate -> fit -> retention.json -> train RMAAT and a baseline -> report.md."""
        model_list = None if not models else [m.strip() for m in models.split(",") if m.strip()]
        sets = [*overrides, *cfgmod.flag_overrides({
            "family": family or None, "task": task or None, "budget_minutes": budget_minutes,
            "models": model_list, "quick": True if quick else None})]
        cfg = cfgmod.load_config(PipelineConfig, config_path, sets)
        if show_defaults:
            click.echo(runs.to_json(cfgmod.to_dict(cfg)), nl=False)
            return
        pipeline(cfg, out_dir)

    return pipeline_command


pipeline_command = _pipeline_cli()
