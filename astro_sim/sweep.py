"""Parameter sweeps: a grid of simulation configs, run serially, on processes, or on Dask.

``sweep(cfg, out_dir, executor=..., workers=..., scheduler=...)`` runs every point of the
Cartesian product of ``cfg.grid`` (dotted config keys -> lists of values) applied to
``cfg.base`` (a simulation config table of any model family) and writes::

    out_dir/config.json            the sweep config (written first)
    out_dir/design.parquet         one row per point: point_id ("p0000"), one column per
                                   grid key (named by its dotted key), seed
    out_dir/points/<point_id>/     a normal simulate run directory: traces.parquet,
                                   samples.parquet, config.json, meta.json (finished)
    out_dir/meta.json              written when every point is finished

A point's seed is derived from the sweep seed and the point index (NumPy ``SeedSequence``),
unless ``seed`` is itself a grid key. Rerunning the same sweep into the same directory
resumes it: finished points are skipped. Everything is validated — grid keys, every point's
config, its protocol arrays and the scheduler address — before anything is written.

Executors: ``serial`` (in this process), ``processes`` (local worker processes), ``dask``
(``dask.distributed.Client``: a ``LocalCluster`` of ``workers`` processes on loopback, or
the scheduler at ``scheduler``, e.g. ``tcp://10.0.0.5:8786`` — the same call; workers of a
remote cluster need this package installed and ``out_dir`` on a shared filesystem). What
runs in a worker, one point or a chunk of them, is :mod:`astro_sim.sweep_worker`.

With ``standalone`` (a family with the standalone hooks: tripartite), every point runs on
``cpp_standalone``: the parent builds each distinct code signature once before dispatching
(usually exactly one build), and each worker process runs the binary from its own copy of
the build, passing the point's parameters and stimulus arrays as run_args.

The engine names no family: it reaches the family's entry module through
:func:`astro_sim.simulate.family_module` and calls the optional hooks listed there
(``validate``, ``standalone_build``, ``standalone_point``, ``warm_imports``).
"""

from __future__ import annotations

import itertools
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from astro_rmaat import config as cfgmod
from astro_rmaat import runs
from astro_rmaat.errors import ConfigError, DataError
from astro_rmaat.workers import check_local_workers
from astro_sim.sweep_worker import pool_worker, run_point, run_points, warm_worker

DESIGN_FILE = "design.parquet"
POINTS_DIR = "points"
STANDALONE_DIR = "_standalone"
EXECUTORS = ("serial", "processes", "dask")


@dataclass(frozen=True)
class SweepConfig:
    base: dict[str, Any] = field(default_factory=lambda: {"model": "tripartite"})  # simulation config table; "model" picks the family
    grid: dict[str, Any] = field(default_factory=dict)   # dotted config key -> list of values (Cartesian product)
    seed: int = 0                                         # base seed; point i gets a seed derived from (seed, i)
    standalone: bool = False                              # run points on cpp_standalone: one build, run_args per point

    def __post_init__(self) -> None:
        cfgmod.require_seed("seed", self.seed)
        if not isinstance(self.base, dict):
            raise ConfigError(f"base = {self.base!r}: expected a table of simulation settings")


# ----------------------------------------------------------------------------- the design
def point_seed(base_seed: int, index: int) -> int:
    """Deterministic per-point seed from the sweep seed and the point index."""
    return int(np.random.SeedSequence([int(base_seed), int(index)]).generate_state(1)[0] & 0x7FFFFFFF)


def _family(base: dict[str, Any]) -> tuple[str, type]:
    from astro_sim import simulate
    model = base.get("model", "tripartite")
    return model, simulate.config_class(model)


def _set_dotted(data: dict[str, Any], key: str, value: Any, cls_name: str) -> None:
    parts = key.split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.get(part) if isinstance(node, dict) else None
        if not isinstance(child, dict):
            raise ConfigError(f"grid key {key!r}: {'.'.join(parts[:i + 1])!r} is not a table of "
                              f"parameters of {cls_name}")
        node = child
    if parts[-1] not in node:
        known = ", ".join(sorted(node))
        raise ConfigError(f"grid key {key!r} is not a parameter of {cls_name}; expected one of "
                          f"{known} (dotted keys reach nested tables, e.g. params.alpha)")
    node[parts[-1]] = value


def _grid_values(grid: dict[str, Any]) -> dict[str, list[Any]]:
    if not grid:
        raise ConfigError("grid is empty: expected at least one key with a list of values, "
                          "e.g. --grid params.alpha=0,0.9")
    out = {}
    for key, values in grid.items():
        if not isinstance(values, (list, tuple)) or len(values) == 0:
            raise ConfigError(f"grid key {key!r} = {values!r}: expected a non-empty list of values")
        out[key] = list(values)
    return out


def design(cfg: SweepConfig) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """The design table and the full config table of every point (all validated)."""
    from astro_sim import simulate
    model, cls = _family(cfg.base)
    grid = _grid_values(cfg.grid)
    defaults = cfgmod.to_dict(cls())
    base = cfgmod.deep_merge(defaults, json.loads(json.dumps(cfg.base)), cls.__name__)
    family = simulate.family_module(model)
    if cfg.standalone:
        if not hasattr(family, "standalone_build"):
            able = [m for m in simulate.MODEL_FAMILIES
                    if hasattr(simulate.family_module(m), "standalone_build")]
            raise ConfigError(f"standalone sweeps are implemented for the {', '.join(able)} "
                              f"family; base model is {model!r}")
        base["target"] = "cpp_standalone"
    keys = list(grid)
    rows, configs = [], []
    for index, combo in enumerate(itertools.product(*(grid[k] for k in keys))):
        data = json.loads(json.dumps(base))
        seed = point_seed(cfg.seed, index)
        if "seed" in data and "seed" not in keys:
            data["seed"] = seed
        for key, value in zip(keys, combo):
            _set_dotted(data, key, value, cls.__name__)
        point_id = f"p{index:04d}"
        try:
            pcfg = cfgmod.from_dict(cls, data)
            if hasattr(family, "validate"):
                family.validate(pcfg)
        except ConfigError as exc:
            raise ConfigError(f"sweep point {point_id} ({', '.join(f'{k}={v!r}' for k, v in zip(keys, combo))}): {exc}") from None
        rows.append({"point_id": point_id, **dict(zip(keys, combo)), "seed": data.get("seed", seed)})
        configs.append(cfgmod.to_dict(pcfg))
    table = pd.DataFrame(rows)
    for key in keys:  # JSON-ish values (lists) are stored as their JSON text
        if table[key].map(lambda v: isinstance(v, (list, tuple, dict))).any():
            table[key] = table[key].map(json.dumps)
    return table, configs


# ----------------------------------------------------------------------------- executors
def chunks(tasks: list, slots: int, size: int | None = None) -> list[list]:
    """Split ``tasks`` into consecutive chunks (one worker task each), in point order.

    ``size``: that many points per chunk. ``None``: guided chunks, each holding ``1/(2 slots)``
    of the points not yet in a chunk (at least one). The large first chunks amortise the
    per-task cost (scheduling, serialising the task and its result); the chunks shrink to
    single points at the end, so that no worker slot idles for more than about one point
    while another finishes its last chunk (equal chunks leave up to a whole chunk of tail).
    """
    out, i = [], 0
    while i < len(tasks):
        step = size or max(1, -(-(len(tasks) - i) // (2 * slots)))
        out.append(tasks[i:i + step])
        i += step
    return out


def _package_env() -> None:
    """Child processes import this very package (a worktree may shadow an installed copy)."""
    root = str(Path(__file__).resolve().parents[1])
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in parts:
        os.environ["PYTHONPATH"] = os.pathsep.join([root, *parts])


#: Dask housekeeping of the loopback cluster, made less frequent: with the defaults (event
#: loop tick every 20 ms, system monitor every 0.5 s, memory monitor every 0.1 s) an idle
#: 2-worker cluster used ~6 % of a core, taken from the points on a small machine; and the
#: worker's statistical profiler (a stack sample of the running task every 10 ms) is off.
LOCAL_CLUSTER_CONFIG = {"distributed.admin.tick.interval": "1s",
                        "distributed.admin.system-monitor.interval": "5s",
                        "distributed.worker.memory.monitor-interval": "1s",
                        "distributed.worker.profile.enabled": False}


def connect_dask(scheduler: str | None, workers: int, timeout_s: float = 10.0):
    """A Dask client: the given scheduler, or a loopback LocalCluster of worker processes."""
    from dask.distributed import Client, LocalCluster

    if scheduler:
        try:
            return Client(scheduler, timeout=timeout_s), None
        except (OSError, TimeoutError) as exc:
            raise ConfigError(f"scheduler {scheduler!r} is unreachable within {timeout_s:g} s "
                              f"({type(exc).__name__}); expected the address of a running "
                              "dask scheduler, e.g. tcp://HOST:8786") from None
        except ValueError as exc:
            raise ConfigError(f"scheduler {scheduler!r}: {exc}; expected e.g. tcp://HOST:8786") from None
    import dask

    _package_env()
    with dask.config.set(LOCAL_CLUSTER_CONFIG):
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               host="127.0.0.1", dashboard_address=None)
    return Client(cluster), cluster


def _iter_results(tasks: list[dict[str, Any]], executor: str, workers: int, client,
                  per_task: int | None, warm: tuple[str, bool, str]) -> Iterable[dict]:
    """Each point's result as it finishes; ``warm``: the arguments of :func:`warm_worker`."""
    if executor == "serial":
        for task in tasks:
            yield run_point(task)
    elif executor == "processes":
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed
        _package_env()
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                                 initializer=pool_worker, initargs=(os.getpid(), *warm)) as pool:
            futures = [pool.submit(run_points, c) for c in chunks(tasks, workers, size=per_task)]
            for fut in as_completed(futures):
                yield from fut.result()
    else:
        from dask.distributed import as_completed
        slots = max(1, sum(client.nthreads().values()))
        futures = [client.submit(run_points, c, pure=False,
                                 key=f"points-{c[0]['point_id']}-{c[-1]['point_id']}-{c[0]['nonce']}")
                   for c in chunks(tasks, slots, size=per_task)]
        for fut in as_completed(futures):
            yield from fut.result()


# ----------------------------------------------------------------------------- the sweep
def sweep(cfg: SweepConfig, out_dir: str | os.PathLike, *, executor: str = "serial",
          workers: int = 2, scheduler: str | None = None, progress: bool = True,
          connect_timeout_s: float = 10.0, points_per_task: int | None = None) -> Path:
    """Run (or resume) the sweep ``cfg`` into ``out_dir``; returns ``out_dir``.

    ``points_per_task``: points run one after the other in one worker task (processes and
    dask executors); ``None``: guided chunks that shrink toward the end (:func:`chunks`).
    """
    if executor not in EXECUTORS:
        raise ConfigError(f"executor = {executor!r}: expected one of {', '.join(EXECUTORS)}")
    if scheduler and executor != "dask":
        raise ConfigError(f"scheduler = {scheduler!r} needs executor 'dask' (got {executor!r})")
    if workers < 1:
        raise ConfigError(f"workers = {workers!r}: expected >= 1")
    if executor == "processes" or (executor == "dask" and not scheduler):   # started here, on this machine
        check_local_workers("workers", workers)
    if points_per_task is not None and points_per_task < 1:
        raise ConfigError(f"points_per_task = {points_per_task!r}: expected >= 1 (or None: automatic)")
    out = Path(out_dir)
    table, configs = design(cfg)          # every bad grid / point config fails here, before I/O
    runs.check_out_dir(out)               # finished, or not writable: refused before I/O
    nonce = f"{time.time_ns():x}"         # names this run of the sweep (task keys, context)
    warm = (nonce, cfg.standalone, configs[0]["model"])   # what warm_worker prepares for
    dask = None
    if executor == "dask":
        dask = _DaskStart(scheduler, workers, connect_timeout_s, warm)
    try:
        return _run(cfg, out, table, configs, executor, workers, dask, progress, points_per_task,
                    warm)
    finally:
        if dask is not None:
            dask.close()


class _DaskStart:
    """The sweep's Dask client, connected while the parent prepares the sweep.

    A scheduler address is connected at once (an unreachable one fails before any I/O);
    a loopback LocalCluster starts, and every worker imports what the points need, in a
    background thread while the parent writes the design and builds (seconds each).
    """

    def __init__(self, scheduler: str | None, workers: int, timeout_s: float,
                 warm: tuple[str, bool, str]) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.start_s = 0.0      # seconds spent connecting and warming the workers
        self.wait_s = 0.0       # seconds of that the parent waited for (not overlapped)
        self._client = self._cluster = self._pool = self._future = None
        if scheduler:
            self._start(scheduler, workers, timeout_s, warm)
        else:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="sweep-dask-start")
            self._future = self._pool.submit(self._start, None, workers, timeout_s, warm)

    def _start(self, scheduler, workers, timeout_s, warm) -> None:
        t0 = time.perf_counter()
        self._client, self._cluster = connect_dask(scheduler, workers, timeout_s)
        self._client.run(warm_worker, *warm)
        self.start_s = time.perf_counter() - t0

    def client(self):
        if self._future is not None:
            t0 = time.perf_counter()
            self._future.result()
            self._future = None
            self.wait_s = time.perf_counter() - t0
        return self._client

    def close(self) -> None:
        if self._future is not None:   # the sweep stopped before it needed the client: let
            self._future.exception()   # the start finish (its error is not the sweep's)
        if self._pool is not None:
            self._pool.shutdown()
        if self._client is not None:
            self._client.close()
        if self._cluster is not None:
            self._cluster.close()


def _run(cfg, out: Path, table, configs, executor, workers, dask, progress,
         points_per_task: int | None, warm: tuple[str, bool, str]) -> Path:
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    runs.prepare_run_dir(out, cfgmod.to_dict(cfg))
    design_path = out / DESIGN_FILE
    if design_path.is_file():
        old = pd.read_parquet(design_path)
        try:
            pd.testing.assert_frame_equal(old, table, check_dtype=False)
            same = True
        except AssertionError:
            same = False
        if not same:
            raise DataError(f"{str(design_path)!r} differs from this sweep's design; "
                            "use a new --out directory")
    else:
        with runs.atomic_path(design_path) as tmp:
            table.to_parquet(tmp, index=False)

    nonce, _, model = warm
    builds, shared, build_keys = 0, None, {}
    if cfg.standalone:   # the family builds (its shared cache, else the sweep dir) before dispatch
        from astro_sim import simulate
        cls = simulate.config_class(model)
        shared, keys, builds = simulate.family_module(model).standalone_build(
            [cfgmod.from_dict(cls, c) for c in configs], out / STANDALONE_DIR / "build")
        build_keys = dict(zip(table["point_id"], keys))

    tasks, skipped = [], 0
    for pid, c in zip(table["point_id"], configs):
        pdir = out / POINTS_DIR / pid
        if runs.is_finished(pdir):
            skipped += 1
            continue
        tasks.append({"point_id": pid, "config": c, "point_dir": str(pdir.resolve()), "nonce": nonce,
                      "standalone_shared": str(shared.resolve()) if shared else None,
                      "standalone_key": build_keys.get(pid),
                      "standalone_workers": str((out / STANDALONE_DIR / "workers").resolve())})
    walls = []
    client = dask.client() if dask is not None else None
    with tqdm(total=len(table), initial=skipped, desc="sweep", unit="point",
              disable=not progress) as bar:
        for res in _iter_results(tasks, executor, workers, client, points_per_task, warm):
            walls.append(res["wall_s"])
            bar.update(1)
    timing = {}
    if dask is not None:
        timing = {"dask_start_s": round(dask.start_s, 6), "dask_start_wait_s": round(dask.wait_s, 6)}
    meta = runs.make_meta(stage="sweep", seed=cfg.seed, wall_time_s=time.perf_counter() - t0,
                          packages=("brian2", "dask", "distributed"), executor=executor,
                          workers=workers if executor != "serial" else 1,
                          n_points=len(table), points_run=len(tasks), points_skipped=skipped,
                          standalone_builds=builds,
                          point_wall_s_median=float(np.median(walls)) if walls else None,
                          point_wall_s_total=round(float(np.sum(walls)), 6), **timing)
    runs.finish_run(out, meta)
    return out


def load_sweep_config(path: str | os.PathLike | None = None, grid_items: Iterable[str] = (),
                      standalone: bool | None = None) -> SweepConfig:
    """The sweep config from a JSON file, with ``key=v1,v2,...`` grid items added on top."""
    data = cfgmod.read_json_file(path, "sweep config") if path is not None else {}
    if "base" not in data and "grid" not in data and data:
        data = {"base": data}             # a plain simulation config file is the base
    grid = dict(data.get("grid", {}))
    for item in grid_items:
        if "=" not in item:
            raise ConfigError(f"--grid {item!r}: expected KEY=V1,V2,..., e.g. --grid params.alpha=0,0.9")
        key, raw = item.split("=", 1)
        values = [_parse_value(v) for v in raw.split(",") if v.strip() != ""]
        grid[key.strip()] = values
    data["grid"] = grid
    if standalone is not None:
        data["standalone"] = standalone or bool(data.get("standalone", False))
    return cfgmod.from_dict(SweepConfig, data)


def _parse_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw.strip()
