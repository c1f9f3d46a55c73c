"""The stage entry point: ``simulate(cfg, out_dir)`` for either model family.

Each family is a subpackage (``astro_sim.network``, ``astro_sim.tripartite``) whose entry
module, named in :data:`MODEL_FAMILIES`, offers:

``<Config>``
    its frozen config dataclass; the first field is ``model``, a literal naming the family.
``run(cfg) -> SimOutput``
    the science, in memory, no I/O.
``validate(cfg)`` (optional)
    checks beyond the config that only the protocol arrays reveal (before any directory).
``REPORT`` (optional)
    Brian2's ``report`` setting, which :func:`simulate` sets for a run with ``progress``.
``standalone_build(configs, default_dir) -> (build_dir, keys, builds)`` (optional)
    for :mod:`astro_sim.sweep`: before a ``standalone`` sweep dispatches its points, build
    what the points' configs need, in their shared build directory or else ``default_dir``;
    return that directory, each point's build key and the number of builds started. A
    family without it has no standalone sweeps.
``standalone_point(build_dir, key, worker_dir)`` (optional, with ``standalone_build``)
    a context manager around each point of a standalone sweep: the point runs from this
    worker process's own copy of its build, kept in ``worker_dir``.
``warm_imports(standalone)`` (optional)
    imports what the family's points need, in a sweep's worker process before its first point.

This module picks the family from the config, runs it, and writes the run directory::

    out_dir/traces.parquet    every recorded variable (long format, rmaat.traces/v1)
    out_dir/samples.parquet   the slow variable at protocol boundaries (what distill fits)
    out_dir/config.json       the full config (written first)
    out_dir/meta.json         versions, git revision, seed, wall time, Brian2 target (last)
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from pathlib import Path
from typing import Any, Iterable

from astro_rmaat import config as cfgmod
from astro_rmaat import resources, runs
from astro_rmaat.errors import ConfigError
from astro_rmaat.traces import write_traces
from astro_sim.output import SimOutput

#: model family -> "entry module:config class". The module exposes ``run(cfg) -> SimOutput``.
MODEL_FAMILIES: dict[str, str] = {
    "rmaat_network": "astro_sim.network.run:NetworkSimConfig",
    "tripartite": "astro_sim.tripartite.run:TripartiteSimConfig",
}
DEFAULT_FAMILY = "rmaat_network"
#: SimOutput attrs that are wall-clock measurements: kept in meta.json, out of the traces files
VOLATILE_ATTRS = ("run_wall_s", "binary_wall_s")
#: packages whose versions a simulate run's meta.json records (beside runs.BASE_PACKAGES)
META_PACKAGES = ("brian2", "scipy", "cython")


def family_module(model: str):
    """The entry module of the family ``model`` (imported on first use)."""
    if model not in MODEL_FAMILIES:
        raise ConfigError(f"model = {model!r}: expected one of {', '.join(MODEL_FAMILIES)}")
    module_name = MODEL_FAMILIES[model].split(":")[0]
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if not (exc.name and f"{module_name}.".startswith(f"{exc.name}.")):
            raise   # a module the family imports is missing, not the family itself
        raise ConfigError(f"model = {model!r}: its module {module_name} is not part of this "
                          "installation") from None


def config_class(model: str = DEFAULT_FAMILY) -> type:
    return getattr(family_module(model), MODEL_FAMILIES[model].split(":")[1])


def load_sim_config(path: str | os.PathLike | None = None, overrides: Iterable[str] = (),
                    model: str | None = None):
    """The config of the family named by the ``--model`` flag, else the last ``--set model=``,
    else the file's ``"model"`` key, else the default (``astro_rmaat.config.PRECEDENCE``)."""
    overrides = list(overrides)
    if model is None:
        for item in overrides:
            if item.split("=", 1)[0].strip() == "model":
                model = cfgmod.parse_override(item)[1]
    if model is None and path is not None:
        model = cfgmod.read_json_file(path).get("model")
    model = model or DEFAULT_FAMILY
    if overrides or path is not None:
        overrides = [*overrides, f"model={model}"]
    cls = config_class(model)
    return cfgmod.load_config(cls, path, overrides)


#: bytes a recorded value takes at a run's peak, as a lower bound (resources.check_memory): the
#: peak rises by 120-131 bytes a value (rmaat_network, tripartite; up to 1.3 M values) and 138
#: (tripartite, 20 units, 16.8 M values) between two recordings of one run
#: (bench/trace_memory.py): Brian2's monitors and the family's long table while the run ends,
#: then the table's canonical copy, the Arrow table and the Parquet writer (simulate hands the
#: family's table to write_traces, which frees it once copied). This counts below every figure
#: measured, so a size it refuses did not fit there.
TRACE_BYTES_PER_VALUE = 112


def check_complete(n_samples: int, expected: int, t_last: float, duration_s: float) -> None:
    """Raise where a run returned fewer samples than its config asks for (a Brian2 run stopped
    early): its output is never written as a finished run. The families run with Brian2's
    ``core.stop_on_keyboard_interrupt`` off, so Ctrl-C raises KeyboardInterrupt instead of
    ending the run early."""
    if n_samples != expected:
        raise RuntimeError(f"the simulation stopped early: its last sample is at t = {t_last:g} s of a "
                           f"{duration_s:g} s run ({n_samples} of {expected} samples); nothing is written")


def check_trace_memory(n_samples: int, per_sample: int, what: str) -> None:
    """``resources.check_memory`` for the recorded traces: ``n_samples`` times of ``per_sample`` values."""
    resources.check_memory(n_samples * per_sample * TRACE_BYTES_PER_VALUE,
                 f"{what}: {n_samples:,} samples of {per_sample:,} recorded values",
                 "a longer recording interval, fewer recorded variables or a shorter run")


def validate(cfg) -> None:
    """The family's checks of what only the protocol arrays reveal (spike times inside the
    run, capacity), run before any directory is made."""
    family = family_module(cfg.model)
    if hasattr(family, "validate"):
        family.validate(cfg)


def _hand_over(result: SimOutput, name: str):
    """``result``'s table ``name``, no longer held by ``result``."""
    table = getattr(result, name)
    setattr(result, name, None)
    return table


def run(cfg) -> SimOutput:
    """Run the simulation described by ``cfg`` in memory (no files written)."""
    return family_module(cfg.model).run(cfg)


def simulate(cfg, out_dir: str | os.PathLike, *, progress: bool = False,
             context: dict[str, Any] | None = None) -> Path:
    """Run ``cfg`` and write its run directory; refuses a directory holding a finished run.

    ``progress``: a line on stderr before Brian2 generates and compiles code (minutes on a cold
    cache), and Brian2's progress report over simulated time where the family supports it.
    ``context``: ``runs.provenance(META_PACKAGES)`` computed once by a caller that writes many
    runs (a sweep), else computed here."""
    if not dataclasses.is_dataclass(cfg) or not hasattr(cfg, "model"):
        raise ConfigError(f"simulate() needs a simulation config dataclass, got {type(cfg).__name__}")
    config = cfgmod.to_dict(cfg)
    validate(cfg)
    out = runs.prepare_run_dir(out_dir, config)
    module = family_module(cfg.model)
    if progress:
        import sys
        print(f"simulating {cfg.model} (Brian2 target {getattr(cfg, 'target', '?')}): code is generated and "
              "compiled on first use, which can take minutes; later runs use the cache", file=sys.stderr, flush=True)
    before = getattr(module, "REPORT", None)
    if progress and hasattr(module, "REPORT"):
        module.REPORT = "stderr"
    try:
        with runs.Stopwatch() as sw:
            result = run(cfg)
    finally:
        if hasattr(module, "REPORT"):
            module.REPORT = before
    # wall-clock figures vary between identical runs: they go to meta.json, not the traces
    timings = {k: result.attrs[k] for k in VOLATILE_ATTRS if k in result.attrs}
    attrs = {"config": config, **{k: v for k, v in result.attrs.items() if k not in timings}}
    attrs.setdefault("model", cfg.model)
    # each table handed over (no reference kept here): write_traces frees it once copied
    traces_sha = write_traces(_hand_over(result, "traces"), out / "traces.parquet",
                              {**attrs, "sampling": "continuous"})
    samples_attrs = {**attrs, "sampling": attrs.get("samples_sampling", "cycle_boundaries")}
    samples_sha = write_traces(_hand_over(result, "samples"), out / "samples.parquet", samples_attrs)
    meta = runs.make_meta(
        stage="simulate", seed=getattr(cfg, "seed", None), wall_time_s=sw.elapsed,
        packages=META_PACKAGES, context=context, model=cfg.model,
        brian2_target=result.attrs.get("target"), **timings,
        files={"traces.parquet": traces_sha, "samples.parquet": samples_sha})
    runs.finish_run(out, meta)
    return out
